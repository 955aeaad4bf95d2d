//! ApiVersions: the ranges from the dispatch table. (An unsupported ApiVersions version never
//! reaches here: the server answers it with a v0 UNSUPPORTED_VERSION response.)

use std::sync::Arc;

use fjord_protocol::api_versions_response;
use fjord_protocol::kafka_protocol::messages::{ApiVersionsRequest, ResponseKind};

use crate::broker::Broker;
use crate::dispatch::{Reply, RequestContext};

pub fn handle(broker: &Arc<Broker>, _ctx: RequestContext, _req: ApiVersionsRequest) -> Reply {
    Reply::now(ResponseKind::ApiVersions(api_versions_response(
        &broker.apis,
    )))
}
