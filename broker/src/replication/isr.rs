//! ISR changes a leader proposes to the controller (Kafka's AlterPartition): expansion when a
//! follower catches up (from the fetch path), and shrinking when an ISR member has not been
//! caught up for `replica.lag.time.max.ms` (from [`shrink_loop`]). The controller checks the
//! leader and partition epochs, so a stale proposal is refused rather than applied; the
//! answer, or a failure, is handed back to the partition, which allows the next proposal.

use std::sync::Arc;
use std::time::Duration;

use fjord_raft::controller::requests::{
    AlterPartition, ControllerRequest, ControllerResponse, PartitionState,
};

use crate::broker::Broker;
use crate::partition::Partition;

/// How long one AlterPartition may take before the partition may propose again.
const ALTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `proposal` for `partition` in the background.
pub fn propose(broker: &Arc<Broker>, partition: Arc<Partition>, proposal: PartitionState) {
    let broker = broker.clone();
    tokio::spawn(async move {
        let committed = send(&broker, &partition, proposal).await;
        partition.on_isr_change(committed);
    });
}

async fn send(
    broker: &Broker,
    partition: &Partition,
    proposal: PartitionState,
) -> Option<PartitionState> {
    let broker_epoch = broker.image().broker(broker.node_id).map(|b| b.epoch)?;
    let req = ControllerRequest::AlterPartition(AlterPartition {
        broker_id: broker.node_id,
        broker_epoch,
        topic_id: partition.topic_id,
        partition: partition.tp.partition,
        leader_epoch: proposal.leader_epoch,
        partition_epoch: proposal.partition_epoch,
        new_isr: proposal.isr.clone(),
    });
    match broker.controller.call(req, ALTER_TIMEOUT).await {
        Ok(ControllerResponse::AlterPartition(Ok(state))) => {
            tracing::info!(partition = %partition.tp, isr = ?state.isr, partition_epoch = state.partition_epoch, "ISR changed");
            Some(state)
        }
        Ok(ControllerResponse::AlterPartition(Err(e))) => {
            tracing::info!(partition = %partition.tp, proposed = ?proposal.isr, code = e.code, error = %e.message, "ISR change refused");
            None
        }
        Ok(other) => {
            tracing::warn!(partition = %partition.tp, "unexpected controller answer to AlterPartition: {other:?}");
            None
        }
        Err(e) => {
            tracing::info!(partition = %partition.tp, error = %e, "ISR change not sent");
            None
        }
    }
}

/// Every half `replica.lag.time.max.ms`, drops laggards from the ISRs this broker leads.
pub async fn shrink_loop(broker: Arc<Broker>) {
    let max_lag = broker.config.replica_lag_time_max;
    let period = (max_lag / 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if broker.is_shutting_down() {
            return;
        }
        let now = fjord_storage::now_ms();
        for p in broker.replicas.all() {
            if let Some(proposal) = p.isr_without_laggards(now, max_lag.as_millis() as i64) {
                tracing::info!(partition = %p.tp, isr = ?proposal.isr, "shrinking the ISR");
                propose(&broker, p, proposal);
            }
        }
    }
}
