//! ekka's `local` lock scope: locks that live only in this process.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// ekka's `local` lock scope: locks that exist only in this process. Acquiring a lock you hold
/// succeeds again (re-entrant); releasing one you do not hold fails.
#[derive(Clone, Debug, Default)]
pub struct LocalLocks {
    held: Arc<Mutex<HashMap<String, String>>>,
}

impl LocalLocks {
    /// Takes `resource` for `owner`; `false` when another owner holds it.
    pub fn acquire(&self, resource: &str, owner: &str) -> bool {
        let mut h = self.held.lock();
        match h.get(resource) {
            Some(o) => o == owner,
            None => {
                h.insert(resource.to_string(), owner.to_string());
                true
            }
        }
    }

    /// Frees `resource`; `true` when it is free afterwards (it was `owner`'s, or nobody's).
    pub fn release(&self, resource: &str, owner: &str) -> bool {
        let mut h = self.held.lock();
        match h.get(resource) {
            Some(o) if o != owner => false,
            _ => {
                h.remove(resource);
                true
            }
        }
    }
}
