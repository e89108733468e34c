//! The generated CRDs (snapshots beside this file), Knative's documentation example, and the
//! webhook defaults and validation as table tests.

use std::collections::BTreeMap;

use expect_test::{Expect, expect, expect_file};
use kinetic_machinery::schema::Schema;
use kube_core::CustomResourceExt;
use serde_json::{Value, json};

use super::config::{Defaults, Domain, Network};
use super::configuration::Configuration;
use super::revision::Revision;
use super::route::Route;
use super::service::Service;
use super::webhook::{self, FieldError, TrafficContext};
use super::*;

fn crds() -> [(&'static str, Value); 4] {
    let v = |crd| serde_json::to_value(crd).expect("the CRD serialises");
    [
        ("service", v(Service::crd())),
        ("configuration", v(Configuration::crd())),
        ("revision", v(Revision::crd())),
        ("route", v(Route::crd())),
    ]
}

fn schema_of(crd: &Value) -> &Value {
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("the CRD has a schema")
}

/// The generated CRDs, as YAML, so every schema change shows in review.
#[test]
fn crd_snapshots() {
    let yaml = |crd| serde_yaml::to_string(&crd).expect("the CRD serialises to YAML");
    expect_file!["service.crd.yaml"].assert_eq(&yaml(Service::crd()));
    expect_file!["configuration.crd.yaml"].assert_eq(&yaml(Configuration::crd()));
    expect_file!["revision.crd.yaml"].assert_eq(&yaml(Revision::crd()));
    expect_file!["route.crd.yaml"].assert_eq(&yaml(Route::crd()));
}

/// Our API server accepts only structural schemas; this is the check it runs on create.
#[test]
fn crd_schemas_are_structural() {
    for (name, crd) in crds() {
        let causes =
            Schema::check_structural(schema_of(&crd), "spec.versions[0].schema.openAPIV3Schema");
        assert!(causes.is_empty(), "{name}: {causes:#?}");
    }
}

/// Names, short names, categories, subresources and printer columns as Knative's CRDs have
/// them, so `kubectl get ksvc,cfg,rev,rt` prints Knative's columns.
#[test]
fn names_and_printer_columns_are_knatives() {
    let mut out = String::new();
    for (_, crd) in crds() {
        let names = &crd["spec"]["names"];
        let version = &crd["spec"]["versions"][0];
        let columns: Vec<String> = version["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns")
            .iter()
            .map(|c| {
                format!(
                    "{} ({}) {}",
                    c["name"].as_str().unwrap_or(""),
                    c["type"].as_str().unwrap_or(""),
                    c["jsonPath"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.push_str(&format!(
            "{} {}/{} {} short={} categories={} subresources={} labels={}\n  {}\n",
            crd["metadata"]["name"].as_str().unwrap_or(""),
            version["name"].as_str().unwrap_or(""),
            names["kind"].as_str().unwrap_or(""),
            crd["spec"]["scope"].as_str().unwrap_or(""),
            names["shortNames"],
            names["categories"],
            version["subresources"],
            crd["metadata"]["labels"],
            columns.join("\n  "),
        ));
    }
    expect![[r#"
        services.serving.knative.dev v1/Service Namespaced short=["kservice","ksvc"] categories=["all","knative","serving"] subresources={"status":{}} labels={"duck.knative.dev/addressable":"true","duck.knative.dev/podspecable":"true","knative.dev/crd-install":"true"}
          URL (string) .status.url
          LatestCreated (string) .status.latestCreatedRevisionName
          LatestReady (string) .status.latestReadyRevisionName
          Ready (string) .status.conditions[?(@.type=='Ready')].status
          Reason (string) .status.conditions[?(@.type=='Ready')].reason
        configurations.serving.knative.dev v1/Configuration Namespaced short=["config","cfg"] categories=["all","knative","serving"] subresources={"status":{}} labels={"duck.knative.dev/podspecable":"true","knative.dev/crd-install":"true"}
          LatestCreated (string) .status.latestCreatedRevisionName
          LatestReady (string) .status.latestReadyRevisionName
          Ready (string) .status.conditions[?(@.type=='Ready')].status
          Reason (string) .status.conditions[?(@.type=='Ready')].reason
        revisions.serving.knative.dev v1/Revision Namespaced short=["rev"] categories=["all","knative","serving"] subresources={"status":{}} labels={"knative.dev/crd-install":"true"}
          Config Name (string) .metadata.labels['serving\.knative\.dev/configuration']
          Generation (string) .metadata.labels['serving\.knative\.dev/configurationGeneration']
          Ready (string) .status.conditions[?(@.type=='Ready')].status
          Reason (string) .status.conditions[?(@.type=='Ready')].reason
          Actual Replicas (integer) .status.actualReplicas
          Desired Replicas (integer) .status.desiredReplicas
        routes.serving.knative.dev v1/Route Namespaced short=["rt"] categories=["all","knative","serving"] subresources={"status":{}} labels={"duck.knative.dev/addressable":"true","knative.dev/crd-install":"true"}
          URL (string) .status.url
          Ready (string) .status.conditions[?(@.type=='Ready')].status
          Reason (string) .status.conditions[?(@.type=='Ready')].reason
    "#]].assert_eq(&out);
}

/// Knative's documentation example (`helloworld-go`) applies unchanged: it passes the
/// schema, gets the webhook's defaults and validates clean.
#[test]
fn knative_doc_example_defaults_and_validates() {
    let manifest = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "helloworld-go", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{
            "image": "ghcr.io/knative/helloworld-go:latest",
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "TARGET", "value": "Go Sample v1"}],
        }]}}},
    });
    let (_, crd) = &crds()[0];
    let schema = Schema::from_json(schema_of(crd), None).expect("the schema compiles");
    let mut obj = manifest.clone();
    assert_eq!(schema.prune(&mut obj), Vec::<String>::new());
    schema.default(&mut obj);
    assert_eq!(schema.validate(&obj), vec![]);
    let mut svc: Service = serde_json::from_value(obj).expect("a Knative Service deserialises");
    webhook::set_service_defaults(&mut svc, &Defaults::default(), Some("alice"), None);
    assert_eq!(webhook::validate_service(&svc, &Defaults::default()), vec![]);
    let v = serde_json::to_value(&svc).expect("serialises");
    expect![[r#"
        {
          "apiVersion": "serving.knative.dev/v1",
          "kind": "Service",
          "metadata": {
            "annotations": {
              "serving.knative.dev/creator": "alice",
              "serving.knative.dev/lastModifier": "alice"
            },
            "name": "helloworld-go",
            "namespace": "default"
          },
          "spec": {
            "template": {
              "metadata": {},
              "spec": {
                "containerConcurrency": 0,
                "timeoutSeconds": 300,
                "containers": [
                  {
                    "env": [
                      {
                        "name": "TARGET",
                        "value": "Go Sample v1"
                      }
                    ],
                    "image": "ghcr.io/knative/helloworld-go:latest",
                    "name": "user-container",
                    "ports": [
                      {
                        "containerPort": 8080
                      }
                    ],
                    "readinessProbe": {
                      "successThreshold": 1,
                      "tcpSocket": {
                        "port": 0
                      }
                    }
                  }
                ],
                "enableServiceLinks": false
              }
            },
            "traffic": [
              {
                "latestRevision": true,
                "percent": 100
              }
            ]
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&v).expect("json"));
}

/// Unknown fields outside the Kubernetes-typed parts are pruned, as Knative's schema prunes
/// them; container fields survive.
#[test]
fn schema_prunes_unknown_spec_fields() {
    let (_, crd) = &crds()[0];
    let schema = Schema::from_json(schema_of(crd), None).expect("the schema compiles");
    let mut obj = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"template": {"spec": {"containers": [{"image": "x", "x-extra": 1}], "bogus": 1}}, "extra": true},
    });
    let mut pruned = schema.prune(&mut obj);
    pruned.sort();
    assert_eq!(pruned, ["spec.extra", "spec.template.spec.bogus"]);
    assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["x-extra"], json!(1));
}

#[test]
fn status_round_trips_with_knative_field_names() {
    let status = json!({
        "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:05Z"},
                       {"type": "ConfigurationsReady", "status": "True"},
                       {"type": "RoutesReady", "status": "Unknown", "reason": "OutOfDate", "severity": "Info"}],
        "latestCreatedRevisionName": "hello-00002",
        "latestReadyRevisionName": "hello-00001",
        "url": "http://hello.default.example.com",
        "address": {"url": "http://hello.default.svc.cluster.local"},
        "traffic": [{"revisionName": "hello-00001", "latestRevision": true, "percent": 100},
                    {"revisionName": "hello-00001", "latestRevision": false, "percent": 0, "tag": "current",
                     "url": "http://current-hello.default.example.com"}],
    });
    let parsed: service::ServiceStatus = serde_json::from_value(status.clone()).expect("parses");
    assert_eq!(parsed.configuration.latest_ready_revision_name.as_deref(), Some("hello-00001"));
    assert_eq!(
        parsed.status.condition(condition::ROUTES_READY).and_then(|c| c.reason.as_deref()),
        Some("OutOfDate")
    );
    assert_eq!(serde_json::to_value(&parsed).expect("serialises"), status);

    let rev = json!({
        "conditions": [{"type": "Active", "status": "False", "reason": "NoTraffic"}],
        "logUrl": "http://logs", "containerStatuses": [{"name": "user-container", "imageDigest": "r@sha256:aa"}],
        "actualReplicas": 0, "desiredReplicas": 0,
    });
    let parsed: revision::RevisionStatus = serde_json::from_value(rev.clone()).expect("parses");
    assert_eq!(serde_json::to_value(&parsed).expect("serialises"), rev);
}

fn spec_json(containers: Value) -> revision::RevisionSpec {
    serde_json::from_value(json!({"containers": containers})).expect("a revision spec")
}

/// `RevisionSpec.SetDefaults` over a few shapes of containers.
#[test]
fn revision_spec_defaults() {
    let check = |mut spec: revision::RevisionSpec, want: Expect| {
        webhook::set_revision_spec_defaults(&mut spec, &Defaults::default(), true);
        want.assert_eq(&serde_json::to_string(&spec).expect("json"));
    };
    // One unnamed container: `user-container`, TCP probe on the (later filled) port.
    check(
        spec_json(json!([{"image": "a"}])),
        expect![[
            r#"{"containerConcurrency":0,"timeoutSeconds":300,"containers":[{"image":"a","name":"user-container","readinessProbe":{"successThreshold":1,"tcpSocket":{"port":0}}}],"enableServiceLinks":false}"#
        ]],
    );
    // Two containers: numbered names, only the one with a port probed.
    check(
        spec_json(
            json!([{"image": "a", "ports": [{"containerPort": 9000}]}, {"image": "sidecar"}]),
        ),
        expect![[
            r#"{"containerConcurrency":0,"timeoutSeconds":300,"containers":[{"image":"a","name":"user-container-0","ports":[{"containerPort":9000}],"readinessProbe":{"successThreshold":1,"tcpSocket":{"port":0}}},{"image":"sidecar","name":"user-container-1"}],"enableServiceLinks":false}"#
        ]],
    );
    // A name taken by the user is skipped; a probe with a period gets Kubernetes' thresholds.
    check(
        spec_json(json!([
            {"image": "a", "name": "user-container-0", "readinessProbe": {"httpGet": {"path": "/healthz", "port": 0}, "periodSeconds": 2}},
            {"image": "b", "ports": [{"containerPort": 8081}]},
        ])),
        expect![[
            r#"{"containerConcurrency":0,"timeoutSeconds":300,"containers":[{"image":"a","name":"user-container-0","readinessProbe":{"failureThreshold":3,"httpGet":{"path":"/healthz","port":0},"periodSeconds":2,"successThreshold":1,"timeoutSeconds":1}},{"image":"b","name":"user-container-1","ports":[{"containerPort":8081}],"readinessProbe":{"successThreshold":1,"tcpSocket":{"port":0}}}],"enableServiceLinks":false}"#
        ]],
    );
    // Volume mounts other than emptyDir and PVCs become read-only; explicit values stay.
    let mut spec: revision::RevisionSpec = serde_json::from_value(json!({
        "containerConcurrency": 10, "timeoutSeconds": 60, "enableServiceLinks": true,
        "containers": [{"image": "a", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}, {"name": "tmp", "mountPath": "/tmp"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "tmp", "emptyDir": {}}],
    }))
    .expect("spec");
    webhook::set_revision_spec_defaults(&mut spec, &Defaults::default(), true);
    expect![[r#"{"containerConcurrency":10,"timeoutSeconds":60,"containers":[{"image":"a","name":"user-container","readinessProbe":{"successThreshold":1,"tcpSocket":{"port":0}},"volumeMounts":[{"mountPath":"/cfg","name":"cfg","readOnly":true},{"mountPath":"/tmp","name":"tmp"}]}],"volumes":[{"configMap":{"name":"c"},"name":"cfg"},{"emptyDir":{},"name":"tmp"}],"enableServiceLinks":true}"#]].assert_eq(&serde_json::to_string(&spec).expect("json"));
}

#[test]
fn traffic_defaults_and_user_info() {
    let mut t = None;
    webhook::set_traffic_defaults(&mut t, true);
    expect![[r#"[{"latestRevision":true,"percent":100}]"#]]
        .assert_eq(&serde_json::to_string(&t).expect("json"));
    let mut t = None;
    webhook::set_traffic_defaults(&mut t, false);
    assert_eq!(t, None);
    let mut t = Some(vec![
        TrafficTarget {
            revision_name: Some("a-00001".into()),
            percent: Some(50),
            ..Default::default()
        },
        TrafficTarget { configuration_name: Some("a".into()), ..Default::default() },
    ]);
    webhook::set_traffic_defaults(&mut t, false);
    expect![[r#"[{"revisionName":"a-00001","latestRevision":false,"percent":50},{"configurationName":"a","latestRevision":true,"percent":0}]"#]].assert_eq(&serde_json::to_string(&t).expect("json"));

    let mut svc = Service::new("s", service::ServiceSpec::default());
    webhook::set_service_defaults(&mut svc, &Defaults::default(), Some("alice"), None);
    let old = svc.clone();
    // An update that changes only metadata keeps the last modifier.
    webhook::set_service_defaults(&mut svc, &Defaults::default(), Some("bob"), Some(&old));
    assert_eq!(
        svc.metadata.annotations.as_ref().map(|a| a[LAST_MODIFIER_ANNOTATION].as_str()),
        Some("alice")
    );
    svc.spec.template.spec.container_concurrency = Some(5);
    webhook::set_service_defaults(&mut svc, &Defaults::default(), Some("bob"), Some(&old));
    expect![[r#"Some({"serving.knative.dev/creator": "alice", "serving.knative.dev/lastModifier": "bob"})"#]].assert_eq(&format!("{:?}", svc.metadata.annotations));
}

fn errors(errs: Vec<FieldError>) -> String {
    webhook::format_errors(&errs)
}

fn service(spec: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "default"}, "spec": spec,
    }))
    .expect("a Service")
}

/// `Service.Validate` over the template, each case named after the rule it checks.
#[test]
fn service_validation() {
    let check = |spec: Value, want: Expect| {
        let mut svc = service(spec);
        webhook::set_service_defaults(&mut svc, &Defaults::default(), None, None);
        want.assert_eq(&errors(webhook::validate_service(&svc, &Defaults::default())));
    };
    let c = |extra: Value| {
        let mut base = json!({"image": "a"});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        base
    };
    // container_concurrency_above_the_limit
    check(
        json!({"template": {"spec": {"containerConcurrency": 1001, "containers": [c(json!({}))]}}}),
        expect!["expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency"],
    );
    // timeout_seconds_above_the_maximum
    check(
        json!({"template": {"spec": {"timeoutSeconds": 601, "containers": [c(json!({}))]}}}),
        expect!["expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds"],
    );
    // response_start_timeout_above_the_timeout
    check(
        json!({"template": {"spec": {"timeoutSeconds": 30, "responseStartTimeoutSeconds": 31, "containers": [c(json!({}))]}}}),
        expect!["expected 0 <= 31 <= 30: spec.template.spec.responseStartTimeoutSeconds"],
    );
    // no_containers_and_missing_image
    check(
        json!({"template": {"spec": {"containers": []}}}),
        expect!["missing field(s): spec.template.spec.containers"],
    );
    check(
        json!({"template": {"spec": {"containers": [{"name": "x"}]}}}),
        expect!["missing field(s): spec.template.spec.containers[0].image"],
    );
    // reserved_environment_variables
    check(
        json!({"template": {"spec": {"containers": [c(json!({"env": [{"name": "PORT", "value": "1"}, {"name": "K_REVISION", "value": "x"}]}))]}}}),
        expect![[r#"
        "K_REVISION" is a reserved environment variable: spec.template.spec.containers[0].env[1].name
        "PORT" is a reserved environment variable: spec.template.spec.containers[0].env[0].name"#]],
    );
    // port_rules
    check(
        json!({"template": {"spec": {"containers": [c(json!({"ports": [{"containerPort": 8012, "name": "grpc", "hostPort": 80}]}))]}}}),
        expect![[r#"
        Port name grpc is not allowed: spec.template.spec.containers[0].ports[0]
        Name must be empty, or one of: 'h2c', 'http1'
        must not set the field(s): spec.template.spec.containers[0].ports[0].hostPort
        port 8012 is reserved: spec.template.spec.containers[0].ports[0].containerPort"#]],
    );
    check(
        json!({"template": {"spec": {"containers": [c(json!({"ports": [{"containerPort": 1}, {"containerPort": 2}]}))]}}}),
        expect![[r#"
        more than one container port is set: spec.template.spec.containers[0].ports
        Only a single port is allowed across all containers"#]],
    );
    // several_containers_need_exactly_one_port
    check(
        json!({"template": {"spec": {"containers": [c(json!({})), c(json!({}))]}}}),
        expect![[r#"
        missing field(s): spec.template.spec.containers
        exactly one container must specify a port (the serving container) when there are several"#]],
    );
    // template_name_must_start_with_the_service_name
    check(
        json!({"template": {"metadata": {"name": "other-v1"}, "spec": {"containers": [c(json!({}))]}}}),
        expect![[
            r#"invalid value: "other-v1" must have prefix "hello-": spec.template.metadata.name"#
        ]],
    );
    check(
        json!({"template": {"metadata": {"name": "hello-v1"}, "spec": {"containers": [c(json!({}))]}}}),
        expect![""],
    );
    // inline_traffic_may_not_name_a_configuration
    check(
        json!({"template": {"spec": {"containers": [c(json!({}))]}}, "traffic": [{"configurationName": "x", "percent": 100}]}),
        expect!["must not set the field(s): spec.traffic[0].configurationName"],
    );
}

/// `RouteSpec.Validate`, each case named after the rule it checks.
#[test]
fn traffic_validation() {
    let check = |traffic: Value, ctx: TrafficContext, want: Expect| {
        let mut t: Option<Vec<TrafficTarget>> = serde_json::from_value(traffic).expect("traffic");
        if ctx != TrafficContext::Status {
            webhook::set_traffic_defaults(&mut t, ctx == TrafficContext::ServiceSpec);
        }
        want.assert_eq(&errors(webhook::validate_traffic(t.as_deref().unwrap_or_default(), ctx)));
    };
    let route = TrafficContext::RouteSpec;
    // split_summing_to_100_is_valid
    check(
        json!([{"revisionName": "a-1", "percent": 50}, {"configurationName": "a", "percent": 50, "tag": "latest"}]),
        route,
        expect![""],
    );
    // percents_must_sum_to_100
    check(
        json!([{"revisionName": "a-1", "percent": 50}, {"revisionName": "a-2", "percent": 40}]),
        route,
        expect!["Traffic targets sum to 90, want 100: traffic"],
    );
    // percent_out_of_bounds
    check(
        json!([{"revisionName": "a-1", "percent": 150}, {"revisionName": "a-2", "percent": -50}]),
        route,
        expect![[r#"
        expected 0 <= -50 <= 100: traffic[1].percent
        expected 0 <= 150 <= 100: traffic[0].percent"#]],
    );
    // latest_revision_must_agree_with_revision_name
    check(
        json!([{"revisionName": "a-1", "latestRevision": true, "percent": 100}]),
        route,
        expect![[
            r#"may not set revisionName "a-1" when latestRevision is true: traffic[0].latestRevision"#
        ]],
    );
    check(
        json!([{"configurationName": "a", "latestRevision": false, "percent": 100}]),
        route,
        expect![[
            r#"may not set revisionName "" when latestRevision is false: traffic[0].latestRevision"#
        ]],
    );
    // one_of_revision_or_configuration
    check(
        json!([{"percent": 100}]),
        route,
        expect![
            "expected exactly one, got neither: traffic[0].configurationName, traffic[0].revisionName"
        ],
    );
    check(
        json!([{"revisionName": "a-1", "configurationName": "a", "latestRevision": false, "percent": 100}]),
        route,
        expect![
            "expected exactly one, got both: traffic[0].configurationName, traffic[0].revisionName"
        ],
    );
    // tags_are_dns_labels_and_unique
    check(
        json!([{"revisionName": "a-1", "percent": 50, "tag": "Canary_1"}, {"revisionName": "a-2", "percent": 50, "tag": "x"}, {"revisionName": "a-3", "percent": 0, "tag": "x"}]),
        route,
        expect![[r#"
        expected exactly one, got both: traffic[1].tag, traffic[2].tag
        invalid value: Canary_1: traffic[0].tag
        a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#]],
    );
    // url_only_in_status_and_with_a_tag
    check(
        json!([{"revisionName": "a-1", "percent": 100, "url": "http://x"}]),
        route,
        expect!["must not set the field(s): traffic[0].url"],
    );
    check(
        json!([{"revisionName": "a-1", "latestRevision": false, "percent": 100, "tag": "t"}, {"configurationName": "a", "percent": 0}]),
        TrafficContext::Status,
        expect!["missing field(s): traffic[0].url, traffic[1].revisionName"],
    );
    // bad_revision_name
    check(
        json!([{"revisionName": "-bad-", "percent": 100}]),
        route,
        expect![[r#"
        invalid key name "-bad-": traffic[0].revisionName
        name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"#]],
    );
    // an empty route spec
    check(json!([]), route, expect!["Traffic targets sum to 0, want 100: traffic"]);
}

/// Revisions are immutable: any spec change on update is refused with Knative's message.
#[test]
fn revision_spec_is_immutable() {
    let d = Defaults::default();
    let mut old = Revision::new("hello-00001", spec_json(json!([{"image": "a"}])));
    webhook::set_revision_defaults(&mut old, &d, true);
    assert_eq!(webhook::validate_revision(&old, None, &d), vec![]);
    let mut new = old.clone();
    new.metadata.labels = Some(BTreeMap::from([("x".to_owned(), "y".to_owned())]));
    assert_eq!(webhook::validate_revision(&new, Some(&old), &d), vec![]);
    new.spec.containers[0].image = Some("b".into());
    expect![[r#"
        Immutable fields changed (-old +new): spec
        {v1.RevisionSpec}:
        	containers:
        		-: [{"image":"a","name":"user-container","readinessProbe":{"successThreshold":1,"tcpSocket":{"port":0}}}]
        		+: [{"image":"b","name":"user-container","readinessProbe":{"successThreshold":1,"tcpSocket":{"port":0}}}]
    "#]].assert_eq(&errors(webhook::validate_revision(&new, Some(&old), &d)));
}

#[test]
fn revision_names_ports_and_probes() {
    assert_eq!(webhook::revision_name("hello", 1), "hello-00001");
    assert_eq!(webhook::revision_name("hello", 123456), "hello-123456");
    let spec =
        spec_json(json!([{"image": "a", "ports": [{"containerPort": 9000, "name": "h2c"}]}]));
    let c = webhook::serving_container(&spec).expect("a serving container");
    assert_eq!(webhook::user_port(c), 9000);
    let mut spec = spec_json(json!([{"image": "side"}, {"image": "a"}]));
    assert!(webhook::serving_container(&spec).is_none());
    spec = spec_json(json!([{"image": "a"}]));
    webhook::set_revision_spec_defaults(&mut spec, &Defaults::default(), true);
    let c = webhook::serving_container(&spec).expect("the only container");
    assert_eq!(webhook::user_port(c), webhook::DEFAULT_USER_PORT);
    expect![[r#"{"successThreshold":1,"tcpSocket":{"port":8080}}"#]]
        .assert_eq(&serde_json::to_string(&webhook::pod_readiness_probe(c)).expect("json"));

    let mut cfg = Configuration::new("hello", configuration::ConfigurationSpec::default());
    cfg.metadata.name = Some("a".repeat(58));
    expect![[r#"
        invalid value: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" is longer than 57 characters, so its revision names would not be DNS labels: metadata.name
        missing field(s): spec.template.spec.containers"#]].assert_eq(&errors(webhook::validate_configuration(&cfg, &Defaults::default())));
    let route = Route::new("Bad", route::RouteSpec::default());
    expect![[r#"
        Traffic targets sum to 0, want 100: spec.traffic
        invalid value: not a DNS 1035 label: metadata.name
        a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"#]].assert_eq(&errors(webhook::validate_route(&route)));
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `config-domain`: the default domain, selectors by specificity, cluster-local visibility.
#[test]
fn domain_lookup() {
    let labels = |pairs: &[(&str, &str)]| data(pairs);
    let empty = Domain::from_data(&data(&[("_example", "ignored")])).expect("valid");
    assert_eq!(empty, Domain::default());
    assert_eq!(empty.lookup(&labels(&[])), "svc.cluster.local");
    let d = Domain::from_data(&data(&[
        ("example.com", ""),
        ("example.org", "selector:\n  app: nonprofit\n"),
        ("a.example.org", "selector:\n  app: nonprofit\n  tier: \"gold\"\n"),
    ]))
    .expect("valid");
    assert_eq!(d.lookup(&labels(&[])), "example.com");
    assert_eq!(d.lookup(&labels(&[("app", "nonprofit")])), "example.org");
    assert_eq!(d.lookup(&labels(&[("app", "nonprofit"), ("tier", "gold")])), "a.example.org");
    assert_eq!(
        d.lookup(&labels(&[(VISIBILITY_LABEL, VISIBILITY_CLUSTER_LOCAL)])),
        "svc.cluster.local"
    );
    assert!(!d.domains.contains_key("svc.cluster.local"));
    assert!(Domain::from_data(&data(&[("x.com", "nonsense")])).is_err());
}

#[test]
fn network_hosts_and_urls() {
    let n = Network::default();
    assert_eq!(n.host("hello", "default", "example.com"), "hello.default.example.com");
    assert_eq!(
        n.tag_host("canary", "hello", "default", "example.com"),
        "canary-hello.default.example.com"
    );
    assert_eq!(n.url("hello.default.example.com"), "http://hello.default.example.com");
    let custom = Network::from_data(&data(&[
        ("domain-template", "{{.Name}}-{{.Namespace}}.{{.Domain}}"),
        ("tag-template", "{{.Name}}-{{.Tag}}"),
        ("rollout-duration", "120"),
    ]))
    .expect("valid");
    assert_eq!(custom.tag_host("v2", "hello", "ns", "example.com"), "hello-v2-ns.example.com");
    assert_eq!(custom.rollout_duration_secs, 120);
    assert!(Network::from_data(&data(&[("domain-template", "{{.Name}}/{{.Domain}}")])).is_err());
    assert!(
        Network::from_data(&data(&[("domain-template", "{{.Labels.app}}.{{.Domain}}")])).is_err()
    );
}

#[test]
fn config_defaults() {
    let d = Defaults::from_data(&data(&[])).expect("defaults");
    assert_eq!(d, Defaults::default());
    assert_eq!((d.revision_timeout_seconds, d.max_revision_timeout_seconds), (300, 600));
    assert_eq!((d.container_concurrency, d.container_concurrency_max_limit), (0, 1000));
    assert_eq!(d.user_container_name, "user-container");
    let err = |pairs: &[(&str, &str)], want: Expect| {
        want.assert_eq(&Defaults::from_data(&data(pairs)).expect_err("refused").to_string());
    };
    err(
        &[("revision-timeout-seconds", "700")],
        expect![
            "revision-timeout-seconds (700) cannot be greater than max-revision-timeout-seconds (600)"
        ],
    );
    err(
        &[("container-concurrency", "2000")],
        expect!["expected 0 <= 2000 <= 1000: container-concurrency"],
    );
    err(
        &[("container-concurrency", "x")],
        expect![[
            r#"failed to parse data: failed to parse "container-concurrency": strconv.ParseInt: parsing "x": invalid syntax"#
        ]],
    );
}

/// Knative's traffic-splitting and tag documentation example (a pinned revision with a tag
/// beside the latest one, and a template named `{service}-...`) defaults and validates clean.
#[test]
fn knative_doc_traffic_split_example_validates() {
    let mut svc = service(json!({
        "template": {
            "metadata": {"name": "hello-world"},
            "spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go:latest",
                                     "env": [{"name": "TARGET", "value": "Knative"}]}]},
        },
        "traffic": [
            {"latestRevision": true, "percent": 50},
            {"revisionName": "hello-00001", "percent": 50, "tag": "v1"},
        ],
    }));
    webhook::set_service_defaults(&mut svc, &Defaults::default(), None, None);
    assert_eq!(webhook::validate_service(&svc, &Defaults::default()), vec![]);
    expect![[r#"[{"latestRevision":true,"percent":50},{"tag":"v1","revisionName":"hello-00001","latestRevision":false,"percent":50}]"#]].assert_eq(&serde_json::to_string(&svc.spec.traffic).expect("json"));
}
