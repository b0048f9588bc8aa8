//! Resident memory of the operator's caches with 1,000 McpServers and 1,000 McpAccessPolicies,
//! and the time of one full resync (bind, validate and build every server) over them.
//!
//! The objects are fed to the same reflector stores the controllers use
//! (`reflector::store::Writer<DeserializeGuard<_>>`), as their watchers do: `Init`, one
//! `InitApply` per object, `InitDone`. Each object goes through JSON, as it arrives from the API
//! server. Prints one JSON line (`make bench` writes it to target/operator-cache-memory.json).
//!
//! Run: `cargo run --release -q -p palisade-operator --example cache_memory`

use std::time::Instant;

use kube::core::DeserializeGuard;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use palisade_crds::{McpAccessPolicy, McpServer};
use palisade_operator::controller::dereference::policies_of;
use palisade_operator::{Settings, build_children, validate};

#[path = "../benches/support/mod.rs"]
mod support;

const SERVERS: usize = 1_000;
const NAMESPACES: usize = 20;

/// VmRSS of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// `object` as the watcher hands it over: deserialized from the API server's JSON.
fn from_wire<K: serde::Serialize + serde::de::DeserializeOwned>(object: &K) -> DeserializeGuard<K>
where
    DeserializeGuard<K>: serde::de::DeserializeOwned,
{
    let bytes = serde_json::to_vec(object).expect("serialize");
    serde_json::from_slice(&bytes).expect("deserialize")
}

fn main() {
    let shape = support::CACHE;
    let namespace = |i: usize| format!("team-{}", i % NAMESPACES);

    let mut servers = Writer::<DeserializeGuard<McpServer>>::default();
    let mut policies = Writer::<DeserializeGuard<McpAccessPolicy>>::default();
    let server_store = servers.as_reader();
    let policy_store = policies.as_reader();
    let rss_before = rss_kib();

    servers.apply_watcher_event(&watcher::Event::Init);
    for i in 0..SERVERS {
        let object = from_wire(&support::server(&shape, i, &namespace(i)));
        servers.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    servers.apply_watcher_event(&watcher::Event::InitDone);
    policies.apply_watcher_event(&watcher::Event::Init);
    for i in 0..SERVERS {
        let object = from_wire(&support::policy(&shape, i, 0, &namespace(i)));
        policies.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    policies.apply_watcher_event(&watcher::Event::InitDone);
    let rss_after = rss_kib();
    assert_eq!(server_store.state().len(), SERVERS);
    assert_eq!(policy_store.state().len(), SERVERS);

    // One full resync: what every reconcile does before it applies (the policies bound from the
    // store, validate, build_children), for every server in the store.
    let settings = Settings::default();
    let start = Instant::now();
    let mut objects = 0;
    for guard in server_store.state() {
        let server = guard.0.as_ref().expect("readable McpServer");
        let bound = policies_of(&policy_store, server);
        assert_eq!(
            bound.policies.len(),
            1,
            "one policy binds {}",
            server.metadata.name.as_deref().unwrap_or("")
        );
        let refs: Vec<&McpAccessPolicy> = bound.policies.iter().collect();
        let validated = validate(server, &refs, &settings).unwrap_or_else(|e| panic!("{e}"));
        objects += build_children(&validated, &settings).iter().count();
    }
    let resync = start.elapsed();

    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    let per_object_kib = (rss_after.saturating_sub(rss_before)) as f64 / (2 * SERVERS) as f64;
    let line = serde_json::json!({
        "servers": SERVERS,
        "policies": SERVERS,
        "rss_before_mib": mib(rss_before),
        "rss_after_mib": mib(rss_after),
        "per_object_kib": (per_object_kib * 10.0).round() / 10.0,
        "resync_servers": SERVERS,
        "resync_children": objects,
        "resync_ms": (resync.as_secs_f64() * 10_000.0).round() / 10.0,
        "resync_per_server_us": (resync.as_secs_f64() * 1e6 / SERVERS as f64).round(),
    });
    println!("{line}");
}
