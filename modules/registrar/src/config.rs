//! `[registrar]` configuration.

use serde::Deserialize;

/// What to do with a contact whose requested expiry is below `min_expires`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MinExpiresMode {
    /// Answer `423 Interval Too Brief` with `Min-Expires` (RFC 3261 §10.3 step 7). As the RFC
    /// allows it only for requests below one hour, a request of 3600 s or more that is still
    /// below a (larger) `min_expires` is raised instead.
    #[default]
    Reject,
    /// Raise it silently to `min_expires` (Kamailio's behaviour).
    Raise,
}

/// What to do when a REGISTER would take an AOR above `max_contacts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxContactsMode {
    /// Refuse the REGISTER with `503 Service Unavailable` (Kamailio's status and
    /// `P-Registrar-Error: Too many registered contacts`); nothing changes.
    #[default]
    Reject,
    /// Accept it and remove the least recently refreshed bindings of the AOR.
    DropOldest,
}

/// The `[registrar]` section. Every key is optional; defaults are listed per field.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Smallest expiry granted, seconds; 0 = no minimum. Default 60.
    pub min_expires: u32,
    /// Largest expiry granted (longer requests are shortened to it), seconds; 0 = no maximum.
    /// Default 0.
    pub max_expires: u32,
    /// Expiry of a contact when neither its `expires` parameter nor an `Expires` header says
    /// one, seconds (kept within `min_expires..=max_expires`). Default 3600.
    pub default_expires: u32,
    /// Expiry spreading, percent (0..=100): every granted expiry is lowered by a random amount
    /// of up to this share, never below `min_expires`, so that phones that registered in the
    /// same second (after an outage) do not all come back in the same second. Kamailio's
    /// `expires_range` + `default_expires_range`. Default 10.
    pub expires_range: u32,
    /// Most bindings per AOR; 0 = unlimited (usrloc's `max_bindings_per_aor` still caps).
    /// Default 0.
    pub max_contacts: u32,
    /// `reject` (503) or `drop-oldest` when `max_contacts` would be exceeded. Default `reject`.
    pub max_contacts_mode: MaxContactsMode,
    /// `reject` (423 with Min-Expires) or `raise` for expiries below `min_expires`.
    /// Default `reject`.
    pub min_expires_mode: MinExpiresMode,
    /// The AOR's domain must be one this server serves (`core.domains`, our addresses, or
    /// any domain when `core.domains` is empty), else 403. Default true.
    pub check_domain: bool,
    /// Seconds in the `Retry-After` header of 500/503 answers caused by the location store or
    /// `max_contacts`; the value sent is randomised between this and 1.5 times it so that
    /// refused phones do not return together. 0 = no header. Default 30.
    pub retry_after: u32,
    /// Compare and store the user part of AORs case-sensitively (RFC 3261 §19.1.4). Default
    /// false: the user part is lowercased, as Kamailio's `case_sensitive = 0` does, because
    /// phones and provisioning systems disagree on the case of alphanumeric user names.
    pub case_sensitive_user: bool,
    /// Store the Path header (RFC 3327) with the binding and use it as the route on lookup.
    /// The 200 OK echoes Path (and `Supported: path`) when the REGISTER says `Supported: path`.
    /// Default true.
    pub use_path: bool,
    /// When the REGISTER was authenticated (`auth_user` set by the auth module), its To user
    /// must be the authenticated user, else 403. Default false.
    pub require_auth_user_match: bool,
    /// On lookup, send to the address the REGISTER came from (`dst_uri`) when the contact
    /// does not name it (NAT); see the README for the rule. Default true.
    pub use_received: bool,
    /// Most Contact values in one REGISTER; more is answered 400. Default 32.
    pub max_contacts_per_request: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 0,
            default_expires: 3600,
            expires_range: 10,
            max_contacts: 0,
            max_contacts_mode: MaxContactsMode::Reject,
            min_expires_mode: MinExpiresMode::Reject,
            check_domain: true,
            retry_after: 30,
            case_sensitive_user: false,
            use_path: true,
            require_auth_user_match: false,
            use_received: true,
            max_contacts_per_request: 32,
        }
    }
}

impl RegistrarConfig {
    /// Checks the values against each other; the message names the key and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.expires_range > 100 {
            return Err(format!(
                "registrar.expires_range = {}: must be a percentage, 0..=100",
                self.expires_range
            ));
        }
        if self.max_expires != 0 && self.max_expires < self.min_expires {
            return Err(format!(
                "registrar.max_expires = {} is below registrar.min_expires = {}",
                self.max_expires, self.min_expires
            ));
        }
        if self.default_expires == 0 {
            return Err("registrar.default_expires must be above 0".into());
        }
        if self.max_contacts_per_request == 0 {
            return Err("registrar.max_contacts_per_request must be above 0".into());
        }
        Ok(())
    }

    /// A copy with out-of-range values brought into range (what [`Registrar::new`] uses when
    /// [`validate`](Self::validate) was not called): the range capped at 100, `max_expires`
    /// raised to `min_expires`, `default_expires` moved into `min..=max`.
    ///
    /// [`Registrar::new`]: crate::Registrar::new
    pub fn normalized(&self) -> RegistrarConfig {
        let mut c = self.clone();
        c.expires_range = c.expires_range.min(100);
        if c.max_expires != 0 && c.max_expires < c.min_expires {
            c.max_expires = c.min_expires;
        }
        if c.default_expires == 0 {
            c.default_expires = 3600;
        }
        c.default_expires = c.default_expires.max(c.min_expires);
        if c.max_expires != 0 {
            c.default_expires = c.default_expires.min(c.max_expires);
        }
        c.max_contacts_per_request = c.max_contacts_per_request.max(1);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registrar_section_parses_with_defaults_and_rejects_unknown_keys() {
        let c: RegistrarConfig =
            toml::from_str("min_expires = 120\nmin_expires_mode = \"raise\"\nmax_contacts_mode = \"drop-oldest\"\n").unwrap();
        assert_eq!(c.min_expires, 120);
        assert_eq!(c.min_expires_mode, MinExpiresMode::Raise);
        assert_eq!(c.max_contacts_mode, MaxContactsMode::DropOldest);
        assert_eq!(c.default_expires, 3600);
        assert_eq!(
            toml::from_str::<RegistrarConfig>("").unwrap(),
            RegistrarConfig::default()
        );
        assert!(toml::from_str::<RegistrarConfig>("min_expire = 1\n").is_err());
        assert!(toml::from_str::<RegistrarConfig>("min_expires_mode = \"maybe\"\n").is_err());
    }

    #[test]
    fn inconsistent_values_are_reported_and_normalized() {
        let c = RegistrarConfig {
            min_expires: 300,
            max_expires: 100,
            default_expires: 30,
            expires_range: 150,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let n = c.normalized();
        assert_eq!(
            (n.max_expires, n.default_expires, n.expires_range),
            (300, 300, 100)
        );
        assert!(n.validate().is_ok());
        assert!(RegistrarConfig::default().validate().is_ok());
    }
}
