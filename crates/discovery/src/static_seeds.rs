//! `static`: a fixed seed list.

use crate::{clean, DiscoveryError, Strategy};

/// Discovers the configured seeds; lock, unlock, register and unregister are ignored.
#[derive(Clone, Debug)]
pub struct Static {
    seeds: Vec<String>,
}

impl Static {
    /// Checks every seed is `HOST:PORT`.
    pub fn new(seeds: Vec<String>) -> Result<Static, DiscoveryError> {
        Ok(Static {
            seeds: clean("static", seeds)?,
        })
    }
}

#[async_trait::async_trait]
impl Strategy for Static {
    fn name(&self) -> &'static str {
        "static"
    }

    async fn discover(&self) -> Result<Vec<String>, DiscoveryError> {
        Ok(self.seeds.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Done;

    #[tokio::test]
    async fn discovers_the_seeds_and_ignores_the_rest() {
        let s = Static::new(vec![
            "127.0.0.1:2".into(),
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
        ])
        .unwrap();
        assert_eq!(s.discover().await.unwrap(), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(s.lock().await, Ok(Done::Ignore));
        assert_eq!(s.unlock().await, Ok(Done::Ignore));
        assert_eq!(s.register().await, Ok(Done::Ignore));
        assert_eq!(s.unregister().await, Ok(Done::Ignore));
    }

    #[test]
    fn bad_seeds_are_refused() {
        let e = Static::new(vec!["nowhere".into()]).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }
}
