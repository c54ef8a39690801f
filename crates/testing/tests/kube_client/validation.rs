//! `422 Invalid` for every validation rule, table-driven, through kube-rs creates.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective};
use registry_sync_testing::kube::Resource;
use serde_json::{Value, json};

use crate::common::{NS, api, dynamic, service_entry, setup, spec, status};

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut se = service_entry("orders", json!({"app": "orders"}), spec());
    edit(&mut se);
    se
}

fn spec_field(field: &'static str, value: Value) -> Value {
    with(|se| se["spec"][field] = value)
}

fn without(field: &'static str) -> Value {
    with(|se| {
        se["spec"].as_object_mut().unwrap().remove(field);
    })
}

fn workload_entry(spec: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
           "metadata": {"name": "orders-1"}, "spec": spec})
}

fn endpoints(n: usize) -> Value {
    (0..n)
        .map(|i| json!({"address": format!("10.1.{}.{}", i / 256, i % 256)}))
        .collect()
}

fn map(n: usize, value: &str) -> Value {
    (0..n)
        .map(|i| (format!("k{i}"), json!(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// `(rule, object, a fragment of the expected message)`.
fn cases() -> Vec<(&'static str, Value, &'static str)> {
    let hosts: Vec<String> = (0..257).map(|i| format!("h{i}.example.com")).collect();
    let ports: Vec<Value> = (1..=257)
        .map(|i| json!({"name": format!("tcp-{i}"), "number": i}))
        .collect();
    vec![
        (
            "hosts are required",
            without("hosts"),
            "spec.hosts: Required value",
        ),
        (
            "at least one host",
            spec_field("hosts", json!([])),
            "spec.hosts in body should have at least 1 items",
        ),
        (
            "at most 256 hosts",
            spec_field("hosts", json!(hosts)),
            "spec.hosts: Too many: 257: must have at most 256 items",
        ),
        (
            "a host is not *",
            spec_field("hosts", json!(["*"])),
            "spec.hosts[0]: Invalid value: \"*\": hostname cannot be wildcard",
        ),
        (
            "at most 256 ports",
            with(|se| {
                se["spec"]["ports"] = json!(ports);
                se["spec"]["endpoints"] = json!([{"address": "10.0.0.1"}])
            }),
            "spec.ports: Too many: 257",
        ),
        (
            "a port number is at least 1",
            spec_field("ports", json!([{"name": "tcp", "number": 0}])),
            "spec.ports[0].number: Invalid value: 0: port must be between 1-65535",
        ),
        (
            "a port number is at most 65535",
            spec_field("ports", json!([{"name": "tcp", "number": 65536}])),
            "port must be between 1-65535",
        ),
        (
            "a targetPort is a port",
            spec_field(
                "ports",
                json!([{"name": "tcp", "number": 80, "targetPort": 70000}]),
            ),
            "spec.ports[0].targetPort",
        ),
        (
            "port numbers are unique",
            spec_field(
                "ports",
                json!([{"name": "a", "number": 80}, {"name": "b", "number": 80}]),
            ),
            "port number cannot be duplicated",
        ),
        (
            "a port has a name",
            spec_field("ports", json!([{"number": 80}])),
            "spec.ports[0].name: Required value",
        ),
        (
            "port names are unique",
            spec_field(
                "ports",
                json!([{"name": "a", "number": 80}, {"name": "a", "number": 81}]),
            ),
            "spec.ports[1]: Duplicate value",
        ),
        (
            "a port number is an integer",
            spec_field("ports", json!([{"name": "a", "number": "80"}])),
            "spec.ports[0].number in body must be of type integer",
        ),
        (
            "at most 4096 endpoints",
            spec_field("endpoints", endpoints(4097)),
            "spec.endpoints: Too many: 4097: must have at most 4096 items",
        ),
        (
            "endpoints or a workload selector",
            spec_field("workloadSelector", json!({"labels": {"app": "orders"}})),
            "only one of WorkloadSelector or Endpoints can be set",
        ),
        (
            "an endpoint port name matches the pattern",
            spec_field(
                "endpoints",
                json!([{"address": "10.0.0.1", "ports": {"http_1": 80}}]),
            ),
            "spec.endpoints[0].ports: Invalid value: port name must be valid",
        ),
        (
            "an endpoint port name is shorter than 63",
            spec_field(
                "endpoints",
                json!([{"address": "10.0.0.1", "ports": {"a".repeat(63): 80}}]),
            ),
            "port name must be valid",
        ),
        (
            "an endpoint port is a port",
            spec_field(
                "endpoints",
                json!([{"address": "10.0.0.1", "ports": {"http": 0}}]),
            ),
            "spec.endpoints[0].ports[http]: Invalid value: 0: port must be between 1-65535",
        ),
        (
            "at most 256 endpoint labels",
            spec_field(
                "endpoints",
                json!([{"address": "10.0.0.1", "labels": map(257, "x")}]),
            ),
            "spec.endpoints[0].labels: Too many: 257: must have at most 256 items",
        ),
        (
            "an endpoint has an address or a network",
            spec_field("endpoints", json!([{"ports": {"http": 80}}])),
            "spec.endpoints[0]: Invalid value: Address is required",
        ),
        (
            "a selector label value is at most 63 long",
            with(|se| {
                se["spec"].as_object_mut().unwrap().remove("endpoints");
                se["spec"]["workloadSelector"] = json!({"labels": {"app": "x".repeat(64)}})
            }),
            "spec.workloadSelector.labels.app: Too long: may not be more than 63 bytes",
        ),
        (
            "a selector label value has no *",
            with(|se| {
                se["spec"].as_object_mut().unwrap().remove("endpoints");
                se["spec"]["workloadSelector"] = json!({"labels": {"app": "ord*"}})
            }),
            "wildcard is not supported in selector",
        ),
        (
            "resolution NONE carries no endpoints",
            spec_field("resolution", json!("NONE")),
            "NONE mode cannot set endpoints",
        ),
        (
            "no resolution means NONE",
            without("resolution"),
            "NONE mode cannot set endpoints",
        ),
        (
            "DNS_ROUND_ROBIN has one endpoint",
            with(|se| {
                se["spec"]["resolution"] = json!("DNS_ROUND_ROBIN");
                se["spec"]["endpoints"] = endpoints(2)
            }),
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        ),
        (
            "CIDR addresses need NONE or STATIC",
            with(|se| {
                se["spec"]["resolution"] = json!("DNS");
                se["spec"]["addresses"] = json!(["10.0.0.0/24"])
            }),
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        ),
        (
            "location is an enum",
            spec_field("location", json!("INSIDE")),
            "spec.location: Unsupported value: \"INSIDE\": supported values: \"MESH_EXTERNAL\", \"MESH_INTERNAL\"",
        ),
        (
            "resolution is an enum",
            spec_field("resolution", json!("MAGIC")),
            "spec.resolution: Unsupported value: \"MAGIC\"",
        ),
        (
            "spec is required",
            with(|se| {
                se.as_object_mut().unwrap().remove("spec");
            }),
            "spec: Required value",
        ),
        (
            "the name is a DNS-1123 subdomain",
            with(|se| se["metadata"]["name"] = json!("Orders_1")),
            "metadata.name: Invalid value: \"Orders_1\": a lowercase RFC 1123 subdomain",
        ),
        (
            "a label key is a qualified name",
            with(|se| se["metadata"]["labels"] = json!({"bad key": "x"})),
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters",
        ),
        (
            "a label value is at most 63 long",
            with(|se| se["metadata"]["labels"] = json!({"app": "x".repeat(64)})),
            "must be no more than 63 bytes",
        ),
        (
            "a label value has label syntax",
            with(|se| se["metadata"]["labels"] = json!({"app": "-x"})),
            "a valid label must be an empty string or consist of alphanumeric characters",
        ),
        (
            "a workload entry has an address or a network",
            workload_entry(json!({"ports": {"http": 80}})),
            "spec: Invalid value: Address is required",
        ),
        (
            "a workload entry port name matches the pattern",
            workload_entry(json!({"address": "10.0.0.1", "ports": {"-http": 80}})),
            "spec.ports: Invalid value: port name must be valid",
        ),
        (
            "a workload entry port is a port",
            workload_entry(json!({"address": "10.0.0.1", "ports": {"http": 65536}})),
            "spec.ports[http]: Invalid value: 65536: port must be between 1-65535",
        ),
        (
            "at most 256 workload entry labels",
            workload_entry(json!({"address": "10.0.0.1", "labels": map(257, "x")})),
            "spec.labels: Too many: 257",
        ),
        (
            "a unix socket takes no ports",
            workload_entry(json!({"address": "unix:///var/run/a.sock", "ports": {"http": 80}})),
            "UDS may not include ports",
        ),
        (
            "a unix socket is absolute",
            workload_entry(json!({"address": "unix://relative.sock"})),
            "UDS must be an absolute path or abstract socket",
        ),
    ]
}

/// Objects at every limit, all valid.
fn at_the_limits() -> Vec<Value> {
    let hosts: Vec<String> = (0..256).map(|i| format!("h{i}.example.com")).collect();
    vec![
        spec_field("hosts", json!(hosts)),
        spec_field("endpoints", endpoints(4096)),
        with(|se| {
            se["spec"].as_object_mut().unwrap().remove("endpoints");
            se["spec"]["workloadSelector"] = json!({"labels": {"app": "x".repeat(63)}});
        }),
        spec_field(
            "endpoints",
            json!([{"network": "vm-net", "ports": {"a".repeat(62): 65535}, "labels": map(256, "x")}]),
        ),
        workload_entry(json!({"address": "unix:///var/run/a.sock"})),
        workload_entry(json!({"network": "vm-net", "ports": {"http": 1}})),
    ]
}

fn api_for(client: &kube::Client, obj: &Value) -> (Api<DynamicObject>, Resource) {
    let resource = if obj["kind"] == "WorkloadEntry" {
        Resource::WorkloadEntry
    } else {
        Resource::ServiceEntry
    };
    (api(client, resource), resource)
}

#[tokio::test]
async fn every_validation_rule_answers_422_invalid_with_the_api_server_message() {
    let (server, client) = setup().await;
    let mut failures = Vec::new();
    for (rule, obj, expected) in cases() {
        let (api, resource) = api_for(&client, &obj);
        match api.create(&PostParams::default(), &dynamic(obj)).await {
            Err(kube::Error::Api(s))
                if s.code == 422 && s.reason == "Invalid" && s.message.contains(expected) =>
            {
                let details = s.details.expect("details");
                assert_eq!(details.kind, resource.kind(), "{rule}");
                assert!(!details.causes.is_empty(), "{rule}: causes");
            }
            other => failures.push(format!("{rule}: expected 422 with {expected:?}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} rules misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(server.all_objects().is_empty(), "nothing invalid was stored");
}

#[tokio::test]
async fn objects_at_the_limits_are_accepted() {
    let (_server, client) = setup().await;
    let valid = at_the_limits();
    for (i, obj) in valid.into_iter().enumerate() {
        let mut obj = obj;
        obj["metadata"]["name"] = json!(format!("ok-{i}"));
        let (api, _) = api_for(&client, &obj);
        api.create(&PostParams::default(), &dynamic(obj.clone()))
            .await
            .unwrap_or_else(|e| panic!("{obj:.200}: {e}"));
    }
}

#[tokio::test]
async fn unknown_fields_are_pruned_with_a_warning_by_a_create_and_refused_by_an_apply() {
    let (server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    let typo = with(|se| se["spec"]["endpoints"][0]["service_account"] = json!("orders"));
    api.create(&PostParams::default(), &dynamic(typo.clone()))
        .await
        .unwrap();
    let stored = server.object(Resource::ServiceEntry, NS, "orders").unwrap();
    assert_eq!(
        stored["spec"]["endpoints"][0],
        json!({"address": "10.0.0.1", "ports": {"http-8080": 8080}})
    );

    let mut strict = PatchParams::apply("registry-sync");
    strict.field_validation = Some(ValidationDirective::Strict);
    let mut typo = typo;
    typo["metadata"]["name"] = json!("strict");
    let err = status(api.patch("strict", &strict, &Patch::Apply(&typo)).await);
    assert_eq!(
        err.code, 500,
        "as the real server: the typed patch cannot be built"
    );
    assert!(
        err.message.contains(
            "failed to create typed patch object (/strict; networking.istio.io/v1, Kind=ServiceEntry): .spec.endpoints[0].service_account: field not declared in schema"
        ),
        "{}",
        err.message
    );
    // And so without strict validation: apply never prunes.
    let err = status(
        api.patch(
            "strict",
            &PatchParams::apply("registry-sync"),
            &Patch::Apply(&typo),
        )
        .await,
    );
    assert_eq!(err.code, 500, "{}", err.message);
}

/// The same cases against the real kube-apiserver with the Istio CRDs (dry-run creates
/// in a namespace of this test's own): the stand-in refuses what the real server
/// refuses, with the same message, and accepts what it accepts.
#[tokio::test]
async fn the_real_api_server_answers_every_case_as_the_stand_in_does() {
    let Some(real) = registry_sync_testing::servers::KubeApiServer::shared() else {
        return;
    };
    let namespace = real.namespace("agreement").await;
    let client = real.admin().await;
    let api_in = |obj: &Value| {
        let resource = if obj["kind"] == "WorkloadEntry" {
            Resource::WorkloadEntry
        } else {
            Resource::ServiceEntry
        };
        Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource.api_resource())
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut failures = Vec::new();
    for (rule, obj, expected) in cases() {
        match api_in(&obj).create(&dry_run, &dynamic(obj)).await {
            Err(kube::Error::Api(s))
                if s.code == 422 && s.reason == "Invalid" && s.message.contains(expected) => {}
            other => failures.push(format!("{rule}: expected 422 with {expected:?}, got {other:?}")),
        }
    }
    for (i, mut obj) in at_the_limits().into_iter().enumerate() {
        obj["metadata"]["name"] = json!(format!("ok-{i}"));
        if let Err(e) = api_in(&obj).create(&dry_run, &dynamic(obj.clone())).await {
            failures.push(format!("at the limits, {obj:.200}: {e}"));
        }
    }
    let mut strict = PatchParams::apply("registry-sync").dry_run();
    strict.field_validation = Some(ValidationDirective::Strict);
    let mut typo = with(|se| se["spec"]["endpoints"][0]["service_account"] = json!("orders"));
    typo["metadata"]["name"] = json!("strict");
    match api_in(&typo).patch("strict", &strict, &Patch::Apply(&typo)).await {
        Err(kube::Error::Api(s))
            if s.code == 500
                && s.message.contains(
                    "failed to create typed patch object (/strict; networking.istio.io/v1, Kind=ServiceEntry): .spec.endpoints[0].service_account: field not declared in schema",
                ) => {}
        other => failures.push(format!("apply of an unknown field: {other:?}")),
    }

    assert!(
        failures.is_empty(),
        "the real API server disagrees with the stand-in on {} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
