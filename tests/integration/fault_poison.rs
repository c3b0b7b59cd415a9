//! Fault: a poison envelope, one whose routing fails every time while everything else works.
//! Injected: a trigger in the test's database makes recording any envelope to organization A
//! fail (the database itself keeps answering). Asserted: the envelope to A is tried
//! `MAX_ATTEMPTS` times, then dead-lettered with the reason `undeliverable` (in the dead-letter
//! queue and table), while 30 envelopes to B published after it all arrive; the ingress queue
//! ends empty; once the trigger is gone, envelopes to A flow again.

use crate::support;

use fedq::envelope::{self, SealOptions};
use fedq::protocol::Kind;
use fedq::server::router::MAX_ATTEMPTS;
use fedq::time::Timestamp;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use support::{TwoOrgRun, eventually, management, route, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_envelope_is_dead_lettered_after_bounded_tries_and_blocks_nothing() {
    let app = spawn_app().await;
    let run = TwoOrgRun::start(&app).await;
    let sql = app.sql().await;
    sql.batch_execute(&format!(
        "CREATE FUNCTION refuse_a() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure for organization A'; END $$;
         CREATE TRIGGER refuse_a BEFORE INSERT ON routing_log FOR EACH ROW
         WHEN (NEW.recipient_org = '{}') EXECUTE FUNCTION refuse_a();",
        run.a.org()
    ))
    .await
    .unwrap();

    let poison = run.b_to_a(b"to a queue that refuses everything");
    run.node_b.publish(&poison).await.unwrap();
    let to_b = |i: usize| {
        let r = route(Kind::RunMessage, run.collaboration, run.task, run.run);
        let body = format!("to b {i}");
        envelope::seal(
            &run.a,
            run.b.org(),
            run.b.current().public(),
            &r,
            body.as_bytes(),
            &SealOptions::default(),
            Timestamp::now(),
        )
        .unwrap()
        .bytes
    };
    for i in 0..30 {
        run.node_a.publish(&to_b(i)).await.unwrap();
    }
    for _ in 0..30 {
        run.node_b.next(30).await;
    }

    let reason: String = eventually(60, "the poison envelope to be dead-lettered", || async {
        let row = sql
            .query_opt("SELECT reason FROM dead_letters WHERE reason_code = 'undeliverable'", &[])
            .await
            .ok()?;
        row.map(|r| r.get(0))
    })
    .await;
    assert!(reason.starts_with(&format!("routing failed {MAX_ATTEMPTS} times; last error:")), "{reason}");
    assert!(reason.contains("injected failure for organization A"), "{reason}");
    let dead: i64 = sql.query_one("SELECT count(*) FROM dead_letters", &[]).await.unwrap().get(0);
    assert_eq!(dead, 1, "only the poison envelope");
    let admin = app.amqp("guest", "guest").await.unwrap();
    let channel = admin.create_channel().await.unwrap();
    let message = eventually(10, "the poison in the dead-letter queue", || async {
        channel.basic_get("fedq.dead-letters".into(), BasicGetOptions { no_ack: true }).await.ok()?
    })
    .await;
    assert_eq!(message.delivery.data, poison, "the envelope is kept unchanged");
    let headers = message.delivery.properties.headers().clone().unwrap();
    assert!(
        matches!(headers.inner().get("x-fedq-reason-code"), Some(AMQPValue::LongString(code)) if code.to_string() == "undeliverable")
    );
    let ingress = management().queue(&app.vhost, "fedq.ingress").await.unwrap().unwrap();
    assert_eq!(ingress.messages, 0, "nothing circles in ingress");

    sql.batch_execute("DROP TRIGGER refuse_a ON routing_log").await.unwrap();
    let healthy = run.b_to_a(b"after the trigger is gone");
    run.node_b.publish(&healthy).await.unwrap();
    assert_eq!(run.node_a.next(30).await.data, healthy);
    app.cleanup().await;
}
