//! The `k8s` strategy against a real HTTP server serving recorded Kubernetes API answers
//! (`testdata/k8s/`): paginated EndpointSlices with not-ready endpoints, the Endpoints fallback,
//! address types, the bearer token and a 403.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ekka_discovery::{AddressType, K8s, K8sConfig, Strategy};

const TOKEN: &str = "t0ken-from-the-service-account";

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/k8s")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn slices(
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if !authorized(&h) {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"kind":"Status","message":"Unauthorized","code":401}"#.into(),
        );
    }
    match ns.as_str() {
        "locked" => json(StatusCode::FORBIDDEN, fixture("forbidden.json")),
        "prod" => {
            assert_eq!(
                q.get("labelSelector").map(String::as_str),
                Some("kubernetes.io/service-name=ekka")
            );
            let page = if q.contains_key("continue") {
                "endpointslices-page2.json"
            } else {
                "endpointslices-page1.json"
            };
            json(StatusCode::OK, fixture(page))
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"kind":"Status","code":404}"#.into(),
        ),
    }
}

async fn endpoints(Path((ns, svc)): Path<(String, String)>, h: HeaderMap) -> Response {
    if !authorized(&h) {
        return json(StatusCode::UNAUTHORIZED, "{}".into());
    }
    if ns == "legacy" && svc == "ekka" {
        json(StatusCode::OK, fixture("endpoints.json"))
    } else {
        json(
            StatusCode::NOT_FOUND,
            r#"{"kind":"Status","code":404}"#.into(),
        )
    }
}

struct Api {
    url: String,
    token: tempfile::NamedTempFile,
}

async fn api() -> Api {
    let app = Router::new()
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            get(slices),
        )
        .route("/api/v1/namespaces/{ns}/endpoints/{svc}", get(endpoints));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), format!("{TOKEN}\n")).unwrap();
    Api { url, token }
}

fn k8s(api: &Api, ns: &str, t: AddressType, suffix: &str) -> K8s {
    K8s::new(K8sConfig {
        apiserver: api.url.clone(),
        namespace: ns.into(),
        service: "ekka".into(),
        port: 4370,
        address_type: t,
        suffix: suffix.into(),
        token_file: Some(api.token.path().to_path_buf()),
        ca_file: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

#[tokio::test]
async fn endpointslices_across_pages_without_not_ready_ones() {
    let a = api().await;
    let got = k8s(&a, "prod", AddressType::Ip, "")
        .discover()
        .await
        .unwrap();
    assert_eq!(got, ["10.42.0.11:4370", "10.42.1.7:4370", "10.42.2.5:4370"]);
}

#[tokio::test]
async fn hostname_and_dns_address_types() {
    let a = api().await;
    let h = k8s(&a, "prod", AddressType::Hostname, "svc.cluster.local");
    assert_eq!(
        h.discover().await.unwrap(),
        [
            "ekka-0.ekka.prod.svc.cluster.local:4370",
            "ekka-2.ekka.prod.svc.cluster.local:4370",
            "ekka-3.ekka.prod.svc.cluster.local:4370",
        ]
    );
    let d = k8s(&a, "prod", AddressType::Dns, "pod.cluster.local");
    assert_eq!(
        d.discover().await.unwrap()[0],
        "10-42-0-11.prod.pod.cluster.local:4370"
    );
}

#[tokio::test]
async fn endpoints_when_there_are_no_endpointslices() {
    let a = api().await;
    let got = k8s(&a, "legacy", AddressType::Ip, "")
        .discover()
        .await
        .unwrap();
    assert_eq!(
        got,
        ["10.0.3.4:4370", "10.0.3.5:4370"],
        "notReadyAddresses are left out"
    );
}

#[tokio::test]
async fn forbidden_and_unauthorized_are_clear_errors() {
    let a = api().await;
    let e = k8s(&a, "locked", AddressType::Ip, "")
        .discover()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("403") && e.to_string().contains("forbidden"),
        "{e}"
    );
    let mut no_token = K8sConfig::from_pod("ekka", 4370);
    no_token.apiserver = a.url.clone();
    no_token.namespace = "prod".into();
    no_token.token_file = None;
    no_token.ca_file = None;
    let e = K8s::new(no_token).unwrap().discover().await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let gone = K8s::new(K8sConfig {
        apiserver: "http://127.0.0.1:1".into(),
        ..k8s_cfg(&a)
    })
    .unwrap();
    assert!(gone.discover().await.is_err());
}

fn k8s_cfg(a: &Api) -> K8sConfig {
    K8sConfig {
        apiserver: a.url.clone(),
        namespace: "prod".into(),
        service: "ekka".into(),
        port: 4370,
        address_type: AddressType::Ip,
        suffix: String::new(),
        token_file: Some(a.token.path().to_path_buf()),
        ca_file: None,
        timeout: Duration::from_secs(2),
    }
}

#[test]
fn bad_settings_are_refused() {
    let base = K8sConfig::from_pod("ekka", 4370);
    assert!(K8s::new(K8sConfig {
        service: String::new(),
        ..base.clone()
    })
    .is_err());
    assert!(K8s::new(K8sConfig {
        port: 0,
        ..base.clone()
    })
    .is_err());
    assert!(K8s::new(K8sConfig {
        apiserver: "ftp://x".into(),
        ..base.clone()
    })
    .is_err());
    let missing_ca = K8sConfig {
        ca_file: Some("/nonexistent/ca.crt".into()),
        ..base
    };
    assert!(K8s::new(missing_ca).is_err());
}
