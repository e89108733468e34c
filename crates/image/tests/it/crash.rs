//! A pull killed with SIGKILL mid-layer: the process is really gone (no destructor runs), and
//! what it left on disk must never be used.

use std::process::{Command, Stdio};

use kinetic_image::Store;
use kinetic_testkit::registry::Registry;

use crate::engine::{noise, stallable_image, stalling_server, wait_for_partial_layer};
use crate::{pull, tmp_entries};

/// Set in the child process this test starts: `<store dir>|<reference>`.
const CHILD: &str = "KINETIC_IT_PULL_CHILD";
const NAME: &str = "crash::a_pull_killed_with_sigkill_mid_layer_leaves_nothing_usable";

#[tokio::test]
async fn a_pull_killed_with_sigkill_mid_layer_leaves_nothing_usable() {
    if let Ok(spec) = std::env::var(CHILD) {
        // The child: pull from the stalling server, which never finishes the layer; the parent
        // kills us while we wait.
        let (root, reference) = spec.split_once('|').unwrap();
        let store = Store::open(root).unwrap();
        let r = pull(&store, reference).await;
        panic!("the pull should have hung until killed, but it ended: {r:?}");
    }
    let reg = Registry::start().await.unwrap();
    let (path, layer) = stallable_image(&reg, "killed").await;
    let front = stalling_server(&reg, layer.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{}|{front}/{path}", root.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_partial_layer(&root).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // What the dead process left: a partial directory in tmp/, nothing else.
    let store_dir_entries = std::fs::read_dir(root.join("tmp")).unwrap().count();
    assert_eq!(store_dir_entries, 1, "the killed pull's partial layer is still there");
    let store = Store::open(&root).unwrap();
    assert!(tmp_entries(&store).is_empty(), "open removes a dead process's partial layer");
    assert!(!store.layer_dir(&layer).exists());
    assert!(store.list().unwrap().is_empty());
    let reference = format!("{}/{path}", reg.addr());
    assert!(store.local(&reference).is_none());

    // The next pull starts the layer again and completes.
    let img = pull(&store, &reference).await.unwrap();
    assert!(!img.cache_hit);
    for i in 0..8u64 {
        assert_eq!(
            std::fs::read(img.layers[0].join(format!("f{i}"))).unwrap(),
            noise(256 << 10, i + 1)
        );
    }
}
