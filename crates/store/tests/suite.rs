//! openraft's storage test suite against `ekka-store` (plain `#[test]`: the suite makes its own
//! runtime per case).

use ekka_store::{DataDir, LogStore, NodeId, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, (tempfile::TempDir, DataDir)>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<((tempfile::TempDir, DataDir), LogStore, StateMachineStore), StorageError<NodeId>>
    {
        let td = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(&td.path().join("data")).expect("open data dir");
        let (log, sm) = dir.open_stores().expect("open stores");
        Ok(((td, dir), log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}
