//! The message pipeline (placeholder until the script engine is wired).
