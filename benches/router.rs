//! Router throughput against a real RabbitMQ and PostgreSQL, beside a no-op forwarder.
//!
//! Both move N persistent 1 KiB messages over the same two hops (a quorum queue in, a quorum
//! queue out), with publisher confirms and an ack only after the confirm, at the same
//! concurrency (prefetch 64):
//! - `noop`: consume, publish, ack; nothing else;
//! - `router`: fedq's router: header parse, the routing facts query, the rules, the signature
//!   check, the routing-log transaction, publish, commit, ack.
//!
//! Each is timed from the start of its consumer until the out queue holds all N messages; the
//! in queue is filled beforehand. `scripts/bench` runs it and writes the table.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use support::*;

const N: usize = 4000;
const CONCURRENCY: u16 = 64;

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString("quorum".into()));
    args
}

async fn depth(channel: &Channel, queue: &str) -> u32 {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    q.message_count()
}

async fn wait_depth(channel: &Channel, queue: &str, n: usize) {
    while (depth(channel, queue).await as usize) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes all messages, then waits for every confirm.
async fn fill(channel: &Channel, exchange: &str, key: &str, messages: &[Vec<u8>], user: Option<&str>) {
    let mut confirms = Vec::with_capacity(messages.len());
    for m in messages {
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(user) = user {
            props = props.with_user_id(user.into());
        }
        confirms.push(
            channel
                .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), m, props)
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        c.await.unwrap();
    }
}

async fn noop_forwarder(app: &TestApp, messages: &[Vec<u8>]) -> Duration {
    let admin = app.amqp("guest", "guest").await.unwrap();
    let setup = admin.create_channel().await.unwrap();
    setup.confirm_select(Default::default()).await.unwrap();
    for q in ["bench.in", "bench.out"] {
        setup
            .queue_declare(q.into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum())
            .await
            .unwrap();
    }
    fill(&setup, "", "bench.in", messages, None).await;

    let start = Instant::now();
    let channel = admin.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    channel.basic_qos(CONCURRENCY, BasicQosOptions::default()).await.unwrap();
    let mut consumer = channel
        .basic_consume("bench.in".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let forwarding = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(usize::from(CONCURRENCY)));
            while let Some(Ok(delivery)) = consumer.next().await {
                let permit = slots.clone().acquire_owned().await.unwrap();
                let channel = channel.clone();
                tokio::spawn(async move {
                    let props = BasicProperties::default().with_delivery_mode(2);
                    channel
                        .basic_publish(
                            "".into(),
                            "bench.out".into(),
                            BasicPublishOptions::default(),
                            &delivery.data,
                            props,
                        )
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
                    drop(permit);
                });
            }
        })
    };
    wait_depth(&setup, "bench.out", messages.len()).await;
    let elapsed = start.elapsed();
    forwarding.abort();
    elapsed
}

async fn router(app: &mut TestApp, messages: &[Vec<u8>], node: &NodeBroker, out_queue: &str) -> Duration {
    let admin = app.amqp("guest", "guest").await.unwrap();
    let setup = admin.create_channel().await.unwrap();
    app.stop().await;
    // A connection per envelope in flight, as a production server is configured.
    app.config.database.pool_size = usize::from(CONCURRENCY);
    // Filled by the node itself: RabbitMQ accepts its user id only from its own connection.
    fill(&node.channel, "fedq.ingress", "", messages, Some(&node.user)).await;
    let start = Instant::now();
    app.restart().await;
    wait_depth(&setup, out_queue, messages.len()).await;
    start.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut app = spawn_app().await;
        let fixture = TwoOrgRun::start(&app).await;
        let payload = vec![7u8; 1024];
        let messages: Vec<Vec<u8>> = (0..N).map(|_| fixture.b_to_a(&payload)).collect();

        let noop = noop_forwarder(&app, &messages).await;
        let routed = router(&mut app, &messages, &fixture.node_b, &fixture.node_a.queue).await;
        let noop_rate = N as f64 / noop.as_secs_f64();
        let router_rate = N as f64 / routed.as_secs_f64();
        println!("noop forwarder: {N} messages in {noop:?} = {noop_rate:.0}/s");
        println!("router:         {N} messages in {routed:?} = {router_rate:.0}/s");
        println!("router / noop = {:.2}", router_rate / noop_rate);
        let out = serde_json::json!({ "n": N, "concurrency": CONCURRENCY, "noop_per_sec": noop_rate, "router_per_sec": router_rate });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-router.json");
        std::fs::write(path, out.to_string()).unwrap();
        app.cleanup().await;
    });
}
