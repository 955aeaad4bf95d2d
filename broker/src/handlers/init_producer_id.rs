//! InitProducerId for idempotent producers (no transactional id): a producer id never handed
//! out before, epoch 0, as Kafka's `TransactionCoordinator.handleInitProducerId` does for a null
//! transactional id. An idempotent producer that asks again with its old id and epoch (KIP-360,
//! v3+) gets a fresh id too: Kafka ignores the old pair when there is no transactional id.
//!
//! Transactional ids are refused with codes::COORDINATOR_NOT_AVAILABLE. That is what Kafka answers when
//! no transaction coordinator can serve (FindCoordinator while the transaction log cannot be
//! created), and it is the truth here: Fjord runs no transaction coordinator yet. The
//! alternatives would misinform the client: NOT_COORDINATOR claims another broker is the
//! coordinator, TRANSACTIONAL_ID_AUTHORIZATION_FAILED claims an ACL denied it, and
//! UNSUPPORTED_VERSION is about the request version, which is supported. Clients treat it as
//! retriable, so a transactional producer keeps retrying until its own timeout and then reports
//! that the coordinator is not available.

use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind,
};

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};

fn error(code: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub fn handle(broker: &Arc<Broker>, _ctx: RequestContext, req: InitProducerIdRequest) -> Reply {
    // Kafka (KafkaApis): an id without an epoch, or an epoch without an id, is malformed.
    if (req.producer_id.0 == -1) != (req.producer_epoch == -1) {
        return Reply::now(ResponseKind::InitProducerId(error(codes::INVALID_REQUEST)));
    }
    match req.transactional_id.as_ref().map(|t| t.as_str()) {
        // Kafka: an empty transactional id is an invalid request, not a transactional one.
        Some("") => {
            return Reply::now(ResponseKind::InitProducerId(error(codes::INVALID_REQUEST)));
        }
        Some(_) => {
            return Reply::now(ResponseKind::InitProducerId(error(
                codes::COORDINATOR_NOT_AVAILABLE,
            )));
        }
        None => {}
    }
    let broker = broker.clone();
    Reply::later(async move {
        let resp = match broker.producer_ids.generate(&broker).await {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(e) => {
                // Kafka answers codes::COORDINATOR_LOAD_IN_PROGRESS while it waits for a block: old
                // clients treat REQUEST_TIMED_OUT as fatal, this one they retry.
                tracing::warn!(error = %e, "InitProducerId failed");
                error(codes::COORDINATOR_LOAD_IN_PROGRESS)
            }
        };
        ResponseKind::InitProducerId(resp)
    })
}
