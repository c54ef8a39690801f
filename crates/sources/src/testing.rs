//! Clients that write to a registry the way its users do, for tests and benches (the
//! `testing` feature). The servers they write to are started by `registry-sync-testing`.

#[cfg(feature = "cloudmap")]
pub use cloudmap_writer::CloudMapWriter;

#[cfg(feature = "cloudmap")]
mod cloudmap_writer {
    use std::collections::HashMap;

    use aws_sdk_servicediscovery::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_servicediscovery::types::{CustomHealthStatus, HealthCheckCustomConfig};

    /// The region every test uses; moto keeps one state per region.
    const MOTO_REGION: &str = "us-east-1";

    /// Writes namespaces, services and instances to a Cloud Map API, as an operator or
    /// an ECS agent would.
    #[derive(Clone)]
    pub struct CloudMapWriter {
        sdk: aws_sdk_servicediscovery::Client,
    }

    impl CloudMapWriter {
        pub fn new(endpoint: &str) -> CloudMapWriter {
            let config = aws_sdk_servicediscovery::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(MOTO_REGION))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
                .endpoint_url(endpoint)
                .interceptor(crate::cloudmap::StripDataPrefix::for_endpoint(endpoint))
                .http_client(aws_smithy_http_client::Builder::new().build_http())
                .build();
            CloudMapWriter {
                sdk: aws_sdk_servicediscovery::Client::from_conf(config),
            }
        }

        /// Creates an HTTP namespace and returns its id.
        pub async fn namespace(&self, name: &str) -> String {
            self.sdk
                .create_http_namespace()
                .name(name)
                .send()
                .await
                .expect("CreateHttpNamespace");
            let listing = self.sdk.list_namespaces().send().await.expect("ListNamespaces");
            listing
                .namespaces
                .unwrap_or_default()
                .into_iter()
                .find(|n| n.name.as_deref() == Some(name))
                .and_then(|n| n.id)
                .expect("the namespace just created is listed")
        }

        /// Creates a service in a namespace and returns its id; with `custom_health` its
        /// instances' health is set through [`CloudMapWriter::set_health`].
        pub async fn service(&self, namespace_id: &str, name: &str, custom_health: bool) -> String {
            let mut request = self.sdk.create_service().namespace_id(namespace_id).name(name);
            if custom_health {
                request = request.health_check_custom_config(HealthCheckCustomConfig::builder().build());
            }
            let created = request.send().await.expect("CreateService");
            created
                .service
                .and_then(|s| s.id)
                .expect("CreateService returns the service id")
        }

        /// Registers an instance, replacing one of the same id. Cloud Map updates an
        /// instance registered again under its id; moto appends a second one, so this
        /// deregisters first.
        pub async fn register(&self, service_id: &str, instance_id: &str, attributes: &[(&str, &str)]) {
            let _ = self
                .sdk
                .deregister_instance()
                .service_id(service_id)
                .instance_id(instance_id)
                .send()
                .await;
            let attributes: HashMap<String, String> = attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            self.sdk
                .register_instance()
                .service_id(service_id)
                .instance_id(instance_id)
                .set_attributes(Some(attributes))
                .send()
                .await
                .expect("RegisterInstance");
        }

        pub async fn deregister(&self, service_id: &str, instance_id: &str) {
            self.sdk
                .deregister_instance()
                .service_id(service_id)
                .instance_id(instance_id)
                .send()
                .await
                .expect("DeregisterInstance");
        }

        /// Sets a custom health check's status.
        pub async fn set_health(&self, service_id: &str, instance_id: &str, healthy: bool) {
            let status = if healthy {
                CustomHealthStatus::Healthy
            } else {
                CustomHealthStatus::Unhealthy
            };
            self.sdk
                .update_instance_custom_health_status()
                .service_id(service_id)
                .instance_id(instance_id)
                .status(status)
                .send()
                .await
                .expect("UpdateInstanceCustomHealthStatus");
        }

        /// The instances revision of a service, as `DiscoverInstancesRevision` says.
        pub async fn revision(&self, namespace: &str, service: &str) -> i64 {
            self.sdk
                .discover_instances_revision()
                .namespace_name(namespace)
                .service_name(service)
                .send()
                .await
                .expect("DiscoverInstancesRevision")
                .instances_revision
                .unwrap_or_default()
        }

        pub async fn delete_service(&self, service_id: &str) {
            self.sdk
                .delete_service()
                .id(service_id)
                .send()
                .await
                .expect("DeleteService");
        }
    }
}
