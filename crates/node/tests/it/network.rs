//! The pod network's start-up checks.

use std::process::Command;

use kinetic_node::{Agent, Config, Error};
use kinetic_testkit::TestServer;

/// An interface made for one test, deleted on drop (also when the test fails).
struct Link(String);

impl Link {
    fn bridge(name: &str, addr: &str) -> Link {
        let link = Link(name.to_owned());
        // Remove a leftover of an earlier, killed run first.
        let _ = Command::new("ip").args(["link", "delete", name]).output();
        for args in [
            vec!["link", "add", name, "type", "bridge"],
            vec!["addr", "add", addr, "dev", name],
            vec!["link", "set", name, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        link
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "delete", &self.0]).output();
    }
}

/// The bug: a stale bridge holding a route for the node's pod range made every pod's readiness
/// probe time out (the host's packets to pod IPs left through the stale bridge) while the agent
/// started as if all was well. It now refuses to start and names the interface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_bridge_routing_the_pod_range_stops_the_agent_with_its_name() {
    let slot = kinetic_testkit::net::NetSlot::take();
    let stale_name = format!("kstale{}", slot.index);
    let gateway = slot.cidr.replace(".0/24", ".1/24");
    let _stale = Link::bridge(&stale_name, &gateway);
    let dir = tempfile::Builder::new().prefix("kinetic-node-it").tempdir_in("/var/tmp").unwrap();
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let mut cfg = Config::new(crate::harness::NODE, dir.path().join("node"));
    cfg.bridge.clone_from(&slot.bridge);
    cfg.pod_cidr.clone_from(&slot.cidr);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.shim = env!("CARGO_BIN_EXE_kinetic-shim").into();
    let err = match Agent::start(client.clone(), cfg.clone()).await {
        Ok(_) => panic!("the agent started although {stale_name} routes {}", slot.cidr),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::RouteConflict { interface, .. } if *interface == stale_name),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&stale_name) && msg.contains(&slot.cidr), "{msg}");
    // Nothing was registered: the check comes before the Node.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    assert!(nodes.get_opt(crate::harness::NODE).await.unwrap().is_none());

    // With the stale bridge gone the same configuration starts.
    drop(_stale);
    let agent = Agent::start(client, cfg).await.unwrap();
    agent.shutdown().await;
}
