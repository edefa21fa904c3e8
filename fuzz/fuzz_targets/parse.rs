//! parse_lenient + validate + every accessor + the error-response fallback + the stream
//! framer fed in small chunks. Must never panic.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sip_msg::{Frame, FramerLimits, SipMessage, StreamFramer};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SipMessage::parse_lenient(Bytes::copy_from_slice(data)) {
        common::exercise(&m);
        let mut out = Vec::new();
        m.write_error_response_raw(400, b"Bad Request", Some(b"t"), &mut out);
        let r = SipMessage::parse_lenient(Bytes::from(out)).expect("our 400 frames");
        assert_eq!(r.status(), Some(400));
        let mut out = Vec::new();
        m.response(200).to_tag(b"t").received(b"192.0.2.1").rport(5060).write(&mut out);
        assert!(SipMessage::parse_lenient(Bytes::from(out)).is_ok());
    }

    let mut framer = StreamFramer::with_limits(FramerLimits {
        max_header_bytes: 2048,
        max_body_bytes: 1024,
    });
    let mut buf = BytesMut::new();
    let step = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(Frame::Message(m))) => {
                    if let Ok(m) = SipMessage::parse(m) {
                        common::exercise(&m);
                    }
                }
                Ok(Some(Frame::Ping)) => {}
                Ok(None) => break,
                Err(e) if e.close() => return,
                Err(_) => {}
            }
        }
        assert!(buf.len() <= 2048 + 1024 + 16 * 2, "framer buffers without bound");
    }
});
