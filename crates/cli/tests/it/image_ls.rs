//! `kinetic image ls|pull --data-dir D` find the store of the agent that `kinetic node
//! --data-dir D` or `kinetic up --data-dir D` runs.

use kinetic_image::push::ImageSpec;
use kinetic_testkit::registry::Registry;

async fn kinetic_image(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .arg("image")
        .args(args)
        .env_remove("KINETIC_DATA_DIR")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kinetic image {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn image(reg: &Registry, repo: &str) -> String {
    let mut config = kinetic_testkit::images::busybox_config();
    config.env.push(format!("IMAGE_LS_TEST={repo}"));
    let reference = format!("{}/{repo}:v1", reg.addr());
    let layers = vec![kinetic_testkit::images::busybox_layer().unwrap()];
    kinetic_testkit::images::push(&reference, ImageSpec { config, layers, ..ImageSpec::default() })
        .await
        .unwrap();
    reference
}

/// Regression (issue 10): `kinetic image ls --data-dir D` looked in `D/node/images`, while
/// `kinetic node --data-dir D` keeps its store in `D/images`, so it listed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_ls_data_dir_looks_where_kinetic_node_keeps_its_store() {
    let reg = Registry::start().await.unwrap();
    let (node_img, up_img, cli_img) =
        (image(&reg, "ls-node").await, image(&reg, "ls-up").await, image(&reg, "ls-cli").await);
    let opts = kinetic_image::PullOptions::default();

    // `kinetic node --data-dir D`: the agent's store is D/images (its Config's data_dir is D).
    let node_dir = tempfile::tempdir().unwrap();
    let store = kinetic_image::Store::open(node_dir.path().join("images")).unwrap();
    store.pull(&node_img, &opts, &kinetic_image::NoProgress).await.unwrap();
    drop(store);
    let d = node_dir.path().to_str().unwrap();
    let ls = kinetic_image(&["ls", "--data-dir", d]).await;
    assert!(ls.contains(&node_img), "{ls}");
    // A pull into the same directory lands in the agent's store, where it would use it.
    kinetic_image(&["pull", &cli_img, "--data-dir", d]).await;
    let listed: Vec<String> = kinetic_image::Store::open(node_dir.path().join("images"))
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert!(listed.contains(&cli_img), "{listed:?}");
    assert!(!node_dir.path().join("node").exists(), "nothing written in up's layout");

    // `kinetic up --data-dir D`: the agent runs in D/node.
    let up_dir = tempfile::tempdir().unwrap();
    let store = kinetic_image::Store::open(up_dir.path().join("node/images")).unwrap();
    store.pull(&up_img, &opts, &kinetic_image::NoProgress).await.unwrap();
    drop(store);
    let ls = kinetic_image(&["ls", "--data-dir", up_dir.path().to_str().unwrap()]).await;
    assert!(ls.contains(&up_img), "{ls}");
}
