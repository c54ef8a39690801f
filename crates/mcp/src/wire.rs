//! Responses as bytes. A set of 10,000 entries is ~9 MiB, the same for every istiod;
//! only the version, the type URL (as each istiod spelled it) and the nonce differ. So
//! the resources are encoded once per set version and shared, and each response adds
//! only its small header: protobuf reads the concatenation of two encodings of one
//! message as their merge, and field 2 (`resources`) may come anywhere.

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{EncodeBuf, Encoder};

use crate::proto::{DiscoveryRequest, DiscoveryResponse};

/// One `DiscoveryResponse`, ready for the wire.
#[derive(Clone, Debug)]
pub struct Encoded {
    header: Vec<u8>,
    resources: Bytes,
}

impl Encoded {
    /// `resources` is the concatenation of [`encode_resource`] of each object.
    pub fn response(version_info: &str, type_url: &str, nonce: &str, resources: &Bytes) -> Encoded {
        let header = DiscoveryResponse {
            version_info: version_info.to_string(),
            type_url: type_url.to_string(),
            nonce: nonce.to_string(),
            ..Default::default()
        }
        .encode_to_vec();
        Encoded {
            header,
            resources: resources.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.header.len() + self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One entry of a response's `resources` field, encoded. A response's resources are
/// the concatenation of these, so a set is rebuilt by copying, without encoding again.
pub fn encode_resource(resource: &prost_types::Any) -> Bytes {
    let mut buf = Vec::with_capacity(resource.encoded_len() + 8);
    prost::encoding::message::encode(2, resource, &mut buf);
    Bytes::from(buf)
}

/// Requests decoded by prost, responses written as they are.
#[derive(Default)]
pub struct Codec;

impl tonic::codec::Codec for Codec {
    type Encode = Encoded;
    type Decode = DiscoveryRequest;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<DiscoveryRequest>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item.header);
        dst.put_slice(&item.resources);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_body_and_its_own_header_decode_as_one_whole_response() {
        let resources: Vec<prost_types::Any> = (0..3)
            .map(|n| prost_types::Any {
                type_url: crate::proto::RESOURCE_TYPE.into(),
                value: vec![n; 5],
            })
            .collect();
        let body: Vec<u8> = resources
            .iter()
            .flat_map(|r| encode_resource(r).to_vec())
            .collect();
        let body = Bytes::from(body);
        let encoded = Encoded::response("v7", "networking.istio.io/v1/ServiceEntry", "s1-4", &body);
        let mut wire = encoded.header.clone();
        wire.extend_from_slice(&encoded.resources);
        assert_eq!(wire.len(), encoded.len());
        let decoded = DiscoveryResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(
            decoded,
            DiscoveryResponse {
                version_info: "v7".into(),
                resources,
                type_url: "networking.istio.io/v1/ServiceEntry".into(),
                nonce: "s1-4".into(),
                ..Default::default()
            }
        );
    }
}
