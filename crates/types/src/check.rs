//! Validation of names and addresses, shared by the state machine, the CLI and the RPC layer.

use crate::limits::{MAX_ADDR_BYTES, MAX_NAME_BYTES};

/// Checks a member name: 1..=MAX_NAME_BYTES of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("name is longer than {MAX_NAME_BYTES} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} has the character {c:?}; use [A-Za-z0-9._-]"
        ));
    }
    Ok(())
}

/// Checks an address: `host:port` with a non-empty host and a port in 1..=65535.
pub fn check_addr(addr: &str) -> Result<(), String> {
    if addr.len() > MAX_ADDR_BYTES {
        return Err(format!("address is longer than {MAX_ADDR_BYTES} bytes"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("address {addr:?} is not HOST:PORT"));
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("address {addr:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("address {addr:?} has no valid port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("n1").is_ok());
        assert!(check_name("node-1.example_a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("é").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_addr("127.0.0.1:4370").is_ok());
        assert!(check_addr("[::1]:4370").is_ok());
        assert!(check_addr("host.example:1").is_ok());
        assert!(check_addr("127.0.0.1").is_err());
        assert!(check_addr(":4370").is_err());
        assert!(check_addr("h:0").is_err());
        assert!(check_addr("h:99999").is_err());
    }
}
