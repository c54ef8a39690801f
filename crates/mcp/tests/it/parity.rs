//! The sink's pre-check (`validate::refusal`) against istiod's own verdict on the wire
//! form (the test client's checks, written from istiod's validation apart from the
//! sink's): every object the sink refuses would be dropped by istiod, and everything the
//! sink serves would be stored.

use std::time::SystemTime;

use prost::Message;
use registry_sync_istio::Resolution;
use registry_sync_mcp::convert::resource;
use registry_sync_mcp::proto;
use registry_sync_mcp::testing::cases::{self, edited, istiod_verdict};
use registry_sync_mcp::testing::{Profile, istiod_refusal};
use registry_sync_mcp::validate::refusal;

const PROFILES: [Profile; 3] = [Profile::Istio120, Profile::Istio124, Profile::Istio130];

#[test]
fn every_object_the_sink_refuses_istiod_would_drop_and_every_one_it_serves_istiod_stores() {
    let refused = cases::refused();
    for profile in PROFILES {
        for (why, object) in &refused {
            assert!(refusal(object).is_some(), "{profile:?}: the sink serves {why}");
            assert!(
                istiod_verdict(profile, object).is_some(),
                "{profile:?}: the sink refuses {why}, which istiod would store"
            );
        }
    }

    let served = cases::stored();
    for profile in PROFILES {
        for (what, object) in &served {
            assert_eq!(refusal(object), None, "{profile:?}: the sink refuses {what}");
            assert_eq!(
                istiod_verdict(profile, object),
                None,
                "{profile:?}: istiod drops {what}"
            );
        }
    }
}

#[test]
fn no_resolution_the_sink_encodes_is_one_an_older_istiod_does_not_know() {
    // DYNAMIC_DNS (4) is unknown before 1.30; DNS_ROUND_ROBIN (3) allows one endpoint.
    for resolution in [Resolution::Static, Resolution::Dns] {
        let object = edited(|s, _| s.resolution = resolution);
        let any = resource(&object, SystemTime::now());
        let body = proto::Resource::decode(any.value.as_slice())
            .unwrap()
            .body
            .unwrap();
        let entry = proto::ServiceEntry::decode(body.value.as_slice()).unwrap();
        assert!(
            matches!(entry.resolution, 1 | 2),
            "{resolution:?} → {}",
            entry.resolution
        );
    }
    // The client's check itself: a DYNAMIC_DNS entry is dropped by a 1.24 istiod.
    let object = edited(|_, _| {});
    let mut resource =
        proto::Resource::decode(resource(&object, SystemTime::now()).value.as_slice()).unwrap();
    let body = resource.body.as_mut().unwrap();
    let mut entry = proto::ServiceEntry::decode(body.value.as_slice()).unwrap();
    entry.resolution = 4;
    entry.endpoints.clear();
    body.value = entry.encode_to_vec();
    let verdict = istiod_refusal(
        Profile::Istio124,
        Profile::Istio124.service_entry(),
        resource.body.as_ref().unwrap(),
    );
    assert!(verdict.is_some_and(|v| v.contains("unknown resolution")));
}
