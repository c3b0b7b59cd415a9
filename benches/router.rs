//! Router throughput and latency against a real RabbitMQ and PostgreSQL, beside a no-op
//! forwarder.
//!
//! Both move persistent 1 KiB messages over the same two hops (a quorum queue in, a quorum queue
//! out), with publisher confirms and an ack only after the confirm, at the same number in
//! flight (the consumer's prefetch):
//! - `noop`: consume, publish, ack; nothing else;
//! - `router`: fedq's router: header parse, the routing facts, the rules, the signature check,
//!   the routing-log transaction (group commit), publish, commit, ack.
//!
//! Throughput: the in queue is filled first; the rate is taken between the first and the last
//! message arriving in the out queue (so the server's start is not counted), at 64 and 256 in
//! flight, and for the router also with two server replicas on one broker. The CPU time of this
//! process while the router runs (the server runs in it) gives envelopes per CPU-second.
//!
//! Latency: envelopes offered at a fixed rate below saturation (100/s), each timed from its
//! publish to its arrival in the out queue.
//!
//! The transparency log's cost: the router with and without logging each envelope
//! (`transparency.log_envelopes`), five rounds of each in turns, 64 in flight.
//!
//! `scripts/bench` runs it and writes the tables from `target/bench-router.json`.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde_json::json;
use support::*;

const N: usize = 10_000;
const LATENCY_RATE: u64 = 100;
const LATENCY_N: usize = 1_000;

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

/// Waits until `queue` holds `n` messages; returns the time the first one was seen and the time
/// all were there.
async fn watch_arrivals(channel: &Channel, queue: &str, n: usize) -> (Instant, Instant) {
    let mut first = None;
    loop {
        let d = depth(channel, queue).await as usize;
        if d > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if d >= n {
            return (first.unwrap_or_else(Instant::now), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Persistent, with the publisher's validated user id when it is a node.
fn properties(user: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default().with_delivery_mode(2);
    match user {
        Some(user) => props.with_user_id(user.into()),
        None => props,
    }
}

/// Publishes all messages, then waits for every confirm.
async fn fill(channel: &Channel, exchange: &str, key: &str, messages: &[Vec<u8>], user: Option<&str>) {
    for chunk in messages.chunks(1000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for m in chunk {
            confirms.push(
                channel
                    .basic_publish(
                        exchange.into(),
                        key.into(),
                        BasicPublishOptions::default(),
                        m,
                        properties(user),
                    )
                    .await
                    .unwrap(),
            );
        }
        for c in confirms {
            c.await.unwrap();
        }
    }
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The no-op forwarder from `bench.in` to `bench.out`, running until aborted.
async fn spawn_noop(app: &TestApp, in_flight: u16) -> tokio::task::JoinHandle<()> {
    let admin = app.amqp("guest", "guest").await.unwrap();
    let channel = admin.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    channel.basic_qos(in_flight, BasicQosOptions::default()).await.unwrap();
    let mut consumer = channel
        .basic_consume("bench.in".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    tokio::spawn(async move {
        let _admin = admin;
        while let Some(Ok(delivery)) = consumer.next().await {
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
            });
        }
    })
}

async fn purge(channel: &Channel, queue: &str) {
    channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await.unwrap();
}

/// Envelopes per second through the no-op forwarder.
async fn noop_throughput(app: &TestApp, setup: &Channel, messages: &[Vec<u8>], in_flight: u16) -> f64 {
    // A forwarder aborted mid-flight leaves its unacknowledged messages requeued in `bench.in`.
    purge(setup, "bench.in").await;
    purge(setup, "bench.out").await;
    fill(setup, "", "bench.in", messages, None).await;
    let forwarder = spawn_noop(app, in_flight).await;
    let (first, last) = watch_arrivals(setup, "bench.out", messages.len()).await;
    forwarder.abort();
    (messages.len() - 1) as f64 / (last - first).as_secs_f64()
}

struct RouterRun {
    per_sec: f64,
    per_cpu_sec: f64,
}

/// Envelopes per second through `replicas` servers routing with `in_flight` each.
async fn router_throughput(
    app: &mut TestApp,
    setup: &Channel,
    fixture: &TwoOrgRun,
    messages: &[Vec<u8>],
    in_flight: u16,
    replicas: usize,
) -> RouterRun {
    app.stop().await;
    purge(setup, &fixture.node_a.queue).await;
    app.config.router.concurrency = in_flight;
    // A connection per envelope in flight, as a production server is configured.
    app.config.database.pool_size = usize::from(in_flight).min(64);
    // Filled by the node itself: RabbitMQ accepts its user id only from its own connection.
    fill(&fixture.node_b.channel, "fedq.ingress", "", messages, Some(&fixture.node_b.user)).await;
    let cpu_before = cpu_time();
    println!("routing");
    let mut others = Vec::new();
    for _ in 1..replicas {
        others.push(fedq::server::start(app.config.clone()).await.expect("a replica starts"));
    }
    app.restart().await;
    let (first, last) = watch_arrivals(setup, &fixture.node_a.queue, messages.len()).await;
    let cpu = cpu_time() - cpu_before;
    for other in others {
        other.shutdown().await;
    }
    RouterRun {
        per_sec: (messages.len() - 1) as f64 / (last - first).as_secs_f64(),
        per_cpu_sec: messages.len() as f64 / cpu.as_secs_f64(),
    }
}

/// Where the latency run publishes: a channel in confirm mode, an exchange and routing key, and
/// the node's user id if a node publishes.
struct Offer {
    channel: Channel,
    exchange: &'static str,
    key: &'static str,
    user: Option<String>,
}

/// Offers `LATENCY_N` messages at `LATENCY_RATE` per second as `offer` says, and times each from
/// its publish to its arrival (consumed by `consumer`); returns p50 and p99 in ms.
async fn latency(messages: Vec<Vec<u8>>, offer: Offer, mut consumer: lapin::Consumer) -> (f64, f64) {
    let offer = Arc::new(offer);
    let sent: Arc<Mutex<HashMap<[u8; 16], Instant>>> = Arc::default();
    let receiving = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(LATENCY_N);
            while latencies.len() < LATENCY_N {
                let delivery = consumer.next().await.unwrap().unwrap();
                let arrived = Instant::now();
                let id = *fedq::envelope::parse(&delivery.data, usize::MAX).unwrap().header.id.as_bytes();
                let at = sent.lock().unwrap().remove(&id).expect("a message this test sent");
                latencies.push((arrived - at).as_secs_f64() * 1000.0);
                delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
            }
            latencies
        })
    };
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    for m in messages {
        tick.tick().await;
        let id = *fedq::envelope::parse(&m, usize::MAX).unwrap().header.id.as_bytes();
        sent.lock().unwrap().insert(id, Instant::now());
        let offer = offer.clone();
        tokio::spawn(async move {
            let props = properties(offer.user.as_deref());
            offer
                .channel
                .basic_publish(
                    offer.exchange.into(),
                    offer.key.into(),
                    BasicPublishOptions::default(),
                    &m,
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }
    let mut latencies = receiving.await.unwrap();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99))
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut app = spawn_app().await;
        let fixture = TwoOrgRun::start(&app).await;
        let payload = vec![7u8; 1024];
        let messages: Vec<Vec<u8>> = (0..N).map(|_| fixture.b_to_a(&payload)).collect();
        let admin = app.amqp("guest", "guest").await.unwrap();
        let setup = admin.create_channel().await.unwrap();
        setup.confirm_select(Default::default()).await.unwrap();
        for q in ["bench.in", "bench.out"] {
            setup
                .queue_declare(
                    q.into(),
                    QueueDeclareOptions { durable: true, ..Default::default() },
                    quorum(),
                )
                .await
                .unwrap();
        }

        // `ROUTER_PROFILE=1`: the router alone, long enough for `perf record` (docs/benchmarks.md).
        if std::env::var_os("ROUTER_PROFILE").is_some() {
            let messages: Vec<Vec<u8>> = (0..4 * N).map(|_| fixture.b_to_a(&payload)).collect();
            println!("router alone: filling; profile from the line 'routing'");
            let run = router_throughput(&mut app, &setup, &fixture, &messages, 64, 1).await;
            println!("router alone: {:.0}/s, {:.0} per CPU-second", run.per_sec, run.per_cpu_sec);
            app.cleanup().await;
            return;
        }
        // The transparency log's cost: the router with and without logging each envelope, in
        // turns, so that drift of the machine falls on both alike; the sequencer runs at its
        // default pace (every 500 ms) as in production, here and in every row below.
        app.config.transparency.sequence_interval_ms =
            fedq::server::config::TransparencyConfig::default().sequence_interval_ms;
        let mut log_rows = Vec::new();
        for round in 0..5 {
            for logged in [true, false] {
                app.config.transparency.log_envelopes = logged;
                let messages: Vec<Vec<u8>> = (0..N).map(|_| fixture.b_to_a(&payload)).collect();
                let run = router_throughput(&mut app, &setup, &fixture, &messages, 64, 1).await;
                println!("round {round}, log {logged}: router {:.0}/s", run.per_sec);
                log_rows.push(json!({"round": round, "logged": logged, "router_per_sec": run.per_sec}));
            }
        }
        // The rows below run as in production: log on, the sequencer at its default pace.
        app.config.transparency.log_envelopes = true;

        let mut rows = Vec::new();
        for (in_flight, replicas) in [(64u16, 1usize), (256, 1), (64, 2)] {
            // Fresh envelopes each time: the router drops ids it has routed before.
            let messages: Vec<Vec<u8>> = if rows.is_empty() {
                messages.clone()
            } else {
                (0..N).map(|_| fixture.b_to_a(&payload)).collect()
            };
            let noop = noop_throughput(&app, &setup, &messages, in_flight).await;
            let router = router_throughput(&mut app, &setup, &fixture, &messages, in_flight, replicas).await;
            println!(
                "{in_flight} in flight, {replicas} replica(s): noop {noop:.0}/s, router {:.0}/s = {:.2}; \
                 {:.0} envelopes per CPU-second",
                router.per_sec,
                router.per_sec / noop,
                router.per_cpu_sec
            );
            rows.push(json!({
                "in_flight": in_flight, "replicas": replicas, "noop_per_sec": noop,
                "router_per_sec": router.per_sec, "router_per_cpu_sec": router.per_cpu_sec,
            }));
        }

        // Latency at a fixed offered rate, the server running with its defaults.
        app.stop().await;
        app.config.router.concurrency = 64;
        app.restart().await;
        purge(&setup, &fixture.node_a.queue).await;
        purge(&setup, "bench.out").await;
        let offered: Vec<Vec<u8>> = (0..LATENCY_N).map(|_| fixture.b_to_a(&payload)).collect();
        let out = fixture.node_a.connection.create_channel().await.unwrap();
        let consumer = out
            .basic_consume(
                fixture.node_a.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let node_b = Offer {
            channel: fixture.node_b.channel.clone(),
            exchange: "fedq.ingress",
            key: "",
            user: Some(fixture.node_b.user.clone()),
        };
        let (router_p50, router_p99) = latency(offered.clone(), node_b, consumer).await;
        let forwarder = spawn_noop(&app, 64).await;
        let consumer = setup
            .basic_consume(
                "bench.out".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let publisher = admin.create_channel().await.unwrap();
        publisher.confirm_select(Default::default()).await.unwrap();
        let admin_offer = Offer { channel: publisher, exchange: "", key: "bench.in", user: None };
        let (noop_p50, noop_p99) = latency(offered, admin_offer, consumer).await;
        forwarder.abort();
        println!(
            "latency at {LATENCY_RATE}/s: router p50 {router_p50:.1} ms, p99 {router_p99:.1} ms; \
             noop p50 {noop_p50:.1} ms, p99 {noop_p99:.1} ms"
        );

        let out = json!({
            "n": N,
            "throughput": rows,
            "transparency": log_rows,
            "latency": {
                "rate": LATENCY_RATE, "n": LATENCY_N,
                "router_p50_ms": router_p50, "router_p99_ms": router_p99,
                "noop_p50_ms": noop_p50, "noop_p99_ms": noop_p99,
            },
        });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-router.json");
        std::fs::write(path, out.to_string()).unwrap();
        app.cleanup().await;
    });
}
