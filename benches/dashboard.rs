//! Dashboard page times with 100,000 tasks and 1,000,000 routing-log rows in the database,
//! against a real server, PostgreSQL and RabbitMQ (the overview also reads the management API,
//! cached for two seconds).
//!
//! The database is filled the way the router fills it, in bulk SQL: 100,000 tasks at three
//! organizations (300,000 jobs in a realistic mix of statuses), a `job_start` and a `job_result`
//! in the routing log for each job and run messages (1,000,000 rows) and 500 dead letters. Each
//! page is then fetched sequentially by a logged-in root administrator; the in-run baseline is
//! `GET /api/v1/health`, the server's smallest round trip that touches the database.
//! `scripts/bench` runs it and writes the table.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::dashboard::Dash;
use support::*;

const TASKS: i64 = 100_000;
/// Run messages in the routing log beside each job's start and result, to reach 1,000,000 rows.
const RUN_MESSAGES: i64 = 1_000_000 - TASKS * 6;
const ROUNDS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn fill(app: &TestApp, orgs: &[fedq::ids::OrgId], collaboration: fedq::ids::CollaborationId) {
    let sql = app.sql().await;
    let (a, b, c) = (*orgs[0].as_uuid(), *orgs[1].as_uuid(), *orgs[2].as_uuid());
    sql.execute(
        "INSERT INTO tasks (id, collaboration_id, run_id, image, name, creator_org_id, created_at)
         SELECT gen_random_uuid(), $1, gen_random_uuid(), 'fedq/secure-sum:0.1.0', 'task ' || i, $2,
                now() - (i || ' seconds')::interval
         FROM generate_series(1, $3::bigint) i",
        &[collaboration.as_uuid(), &a, &TASKS],
    )
    .await
    .unwrap();
    // Statuses: mostly completed, some running, pending, failed and killed.
    sql.execute(
        "INSERT INTO jobs (id, task_id, org_id, status)
         SELECT gen_random_uuid(), t.id, o.org,
                CASE WHEN r < 0.70 THEN 'completed' WHEN r < 0.80 THEN 'running' WHEN r < 0.90 THEN 'pending'
                     WHEN r < 0.95 THEN 'failed' ELSE 'killed' END
         FROM (SELECT id, random() AS r FROM tasks) t CROSS JOIN (VALUES ($1::uuid), ($2::uuid), ($3::uuid)) o(org)",
        &[&a, &b, &c],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO routing_log (message_id, kind, sender_org, recipient_org, collaboration_id, task_id, run_id,
                                  status, size, outcome, via, publisher, routed_at)
         SELECT decode(md5(j.id::text || k.kind), 'hex'), k.kind,
                CASE WHEN k.kind = 'job_start' THEN t.creator_org_id ELSE j.org_id END,
                CASE WHEN k.kind = 'job_start' THEN j.org_id ELSE t.creator_org_id END,
                t.collaboration_id, t.id, t.run_id,
                CASE WHEN k.kind = 'job_result' THEN 'completed' END, 900, 'forwarded', 'broker', 'bench',
                t.created_at + interval '1 second'
         FROM jobs j JOIN tasks t ON t.id = j.task_id CROSS JOIN (VALUES ('job_start'), ('job_result')) k(kind)",
        &[],
    )
    .await
    .unwrap();
    sql.execute(
        "WITH recent AS (SELECT id, collaboration_id, run_id, created_at,
                                row_number() OVER (ORDER BY created_at DESC) - 1 AS n
                         FROM tasks ORDER BY created_at DESC LIMIT 1000)
         INSERT INTO routing_log (message_id, kind, sender_org, recipient_org, collaboration_id, task_id, run_id,
                                  size, outcome, via, publisher, routed_at)
         SELECT decode(md5('run' || i), 'hex'), 'run_message', $1, $2, t.collaboration_id, t.id, t.run_id,
                1100, 'forwarded', 'broker', 'bench', t.created_at + interval '2 seconds'
         FROM generate_series(1, $3::bigint) i JOIN recent t ON t.n = i % 1000",
        &[&b, &c, &RUN_MESSAGES],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO dead_letters (reason_code, reason, kind, sender_org, recipient_org, publisher, size)
         SELECT CASE WHEN i % 3 = 0 THEN 'malformed' WHEN i % 3 = 1 THEN 'bad_signature' ELSE 'expired' END,
                'refused by the benchmark', 'job_result', $1, $2, 'bench', 700
         FROM generate_series(1, 500) i",
        &[&b, &a],
    )
    .await
    .unwrap();
    // What autovacuum does after bulk inserts (its insert threshold): statistics and the
    // visibility map, without which no count could be answered from an index alone.
    sql.batch_execute("VACUUM ANALYZE tasks, jobs, routing_log, dead_letters").await.unwrap();
}

async fn time_page(dash: &Dash, path: &str) -> (f64, f64, f64) {
    for _ in 0..10 {
        let (status, _, body) = dash.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let (status, _, body) = dash.get(path).await;
        times.push(start.elapsed());
        assert_eq!(status, 200);
        assert!(!body.is_empty());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.95), percentile(&times, 1.0))
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let app = spawn_app().await;
    let orgs = [app.org("registry-a").await, app.org("registry-b").await, app.org("registry-c").await];
    let ids: Vec<_> = orgs.iter().map(|o| o.org()).collect();
    let collaboration = app.collaboration("registries", &ids).await;
    for org in &ids {
        app.node(*org, &format!("node-{}", &org.to_string()[..8])).await;
    }
    app.user(ids[0], "alma", "org_admin").await;
    fill(&app, &ids, collaboration).await;

    let mut root = Dash::new(&app);
    root.login("root", ROOT_PASSWORD).await;
    let mut org_admin = Dash::new(&app);
    org_admin.login("alma", "a-long-password-123").await;
    let (_, _, list) = root.get("/admin/tasks").await;
    let at = list.find("href=\"/admin/tasks/").expect("a task is listed") + "href=\"/admin/tasks/".len();
    let task = list[at..at + 36].to_owned();

    let pages = [
        ("baseline: GET /api/v1/health", "/api/v1/health", &root),
        ("overview, root", "/admin", &root),
        ("overview, organization administrator", "/admin", &org_admin),
        ("overview live fragment", "/admin/live", &root),
        ("tasks, first page", "/admin/tasks", &root),
        ("tasks, last page", &*format!("/admin/tasks?page={}", TASKS / 50), &root),
        (
            "tasks, last page, organization administrator",
            &*format!("/admin/tasks?page={}", TASKS / 50),
            &org_admin,
        ),
        ("tasks, filtered by task status", "/admin/tasks?task_status=failed", &root),
        ("one task", &*format!("/admin/tasks/{task}"), &root),
        ("routing log, first page", "/admin/routing", &root),
        (
            "routing log, by organization and kind",
            &*format!("/admin/routing?kind=job_result&organization={}", ids[1]),
            &root,
        ),
        ("dead letters", "/admin/dead-letters", &root),
        ("organizations & nodes", "/admin/organizations", &root),
    ];
    let mut rows = Vec::new();
    for (name, path, dash) in pages {
        let (p50, p95, max) = time_page(dash, path).await;
        println!("{name:45} p50 {p50:7.2} ms  p95 {p95:7.2} ms  max {max:7.2} ms");
        rows.push(
            serde_json::json!({"page": name, "path": path, "p50_ms": p50, "p95_ms": p95, "max_ms": max}),
        );
    }
    let out = serde_json::json!({"tasks": TASKS, "jobs": TASKS * 3, "routing_log": TASKS * 6 + RUN_MESSAGES, "rounds": ROUNDS, "pages": rows});
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-dashboard.json");
    std::fs::write(path, out.to_string()).unwrap();
    app.cleanup().await;
}
