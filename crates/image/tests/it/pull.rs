use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use kinetic_image::{NoProgress, PullOptions};
use kinetic_testkit::images;
use kinetic_testkit::registry::Registry;

use crate::{read, store};

#[tokio::test]
async fn pulls_busybox_with_files_and_config() {
    let reg = Registry::start().await.unwrap();
    let reference =
        images::busybox(&reg, "busybox", "v1", &[("/www/version", "v1")]).await.unwrap();
    let (_dir, store) = store();
    let img = store.pull(&reference, &PullOptions::default(), &NoProgress).await.unwrap();
    assert_eq!(img.reference, reference);
    assert!(img.digest.starts_with("sha256:"));
    assert_eq!(img.image_id, format!("{}/busybox@{}", reg.addr(), img.digest));
    assert_eq!(img.config.cmd, ["sh"]);
    assert_eq!(img.config.env, ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    assert_eq!(img.layers.len(), 2);
    assert!(!img.cache_hit);
    assert!(img.downloaded_bytes > 1_000_000, "{}", img.downloaded_bytes);
    let base = &img.layers[0];
    let bb = std::fs::metadata(base.join("bin/busybox")).unwrap();
    assert_eq!(bb.len(), std::fs::metadata("/bin/busybox").unwrap().len());
    assert_eq!(bb.permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read_link(base.join("bin/sh")).unwrap().to_str(), Some("busybox"));
    assert!(read(&base.join("etc/passwd")).contains("nobody:x:65534:65534"));
    assert_eq!(std::fs::metadata(base.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(read(&img.layers[1].join("www/version")), "v1");

    // A second pull finds everything cached.
    let again = store.pull(&reference, &PullOptions::default(), &NoProgress).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.downloaded_bytes, 0);
    assert_eq!(again.digest, img.digest);
    let local = store.local(&reference).unwrap();
    assert_eq!(local.layers, img.layers);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reference, reference);
    assert_eq!(list[0].layers, 2);
    assert!(list[0].size > 1_000_000);
}
