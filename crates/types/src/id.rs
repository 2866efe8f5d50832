//! Node and cluster identifiers and their 16-digit lowercase hex form.

/// A node's id: random, created at first boot (and after every wipe), kept in the data dir.
pub type NodeId = u64;

/// A cluster's id: random, created when the cluster bootstraps; carried by every peer RPC.
pub type ClusterId = u64;

/// Formats an id as the 16-digit lowercase hex string used in output and JSON.
pub fn fmt_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses the form written by [`fmt_id`]; `None` for anything else.
pub fn parse_id(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_hex() {
        for id in [0, 1, 0x3e0b_7d1a_9c2f_4e55, u64::MAX] {
            let s = fmt_id(id);
            assert_eq!(s.len(), 16);
            assert_eq!(parse_id(&s), Some(id));
        }
        assert_eq!(parse_id("xyz"), None);
        assert_eq!(parse_id("00000000000000001"), None);
        assert_eq!(parse_id("000000000000000g"), None);
    }
}
