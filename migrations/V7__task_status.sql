-- A task's status, kept by the database from its jobs' statuses, so that the overview's counts
-- and the task lists filtered by status read one column instead of aggregating every job of
-- every task. The rule is TaskStatus::of in fedq-core (and db::tasks::TASK_STATUS_SQL): running
-- while any job runs, pending while any waits, completed when all completed, killed when any
-- was killed, refused when all were, failed otherwise.
ALTER TABLE tasks ADD COLUMN status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('running', 'pending', 'completed', 'killed', 'refused', 'failed'));

CREATE FUNCTION task_status_of(task uuid) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(CASE
        WHEN bool_or(j.status = 'running') THEN 'running'
        WHEN bool_or(j.status IN ('pending', 'delivered')) THEN 'pending'
        WHEN bool_and(j.status = 'completed') THEN 'completed'
        WHEN bool_or(j.status = 'killed') THEN 'killed'
        WHEN bool_and(j.status = 'refused') THEN 'refused'
        ELSE 'failed' END, 'pending')
    FROM jobs j WHERE j.task_id = task
$$;

-- Once per statement, for the tasks whose jobs it inserted or changed: the router applies a
-- group's statuses in one statement, and a kill marks a whole tree in one.
CREATE FUNCTION tasks_follow_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks t SET status = s.status
    FROM (SELECT c.task_id, task_status_of(c.task_id) AS status
          FROM (SELECT DISTINCT task_id FROM changed) c) s
    WHERE t.id = s.task_id AND t.status IS DISTINCT FROM s.status;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_inserted_task_status AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION tasks_follow_jobs();
CREATE TRIGGER jobs_updated_task_status AFTER UPDATE ON jobs
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION tasks_follow_jobs();

UPDATE tasks t SET status = task_status_of(t.id);

-- The overview counts tasks by status (all, or an organization's collaborations') from indexes
-- alone; the task list pages by (created_at, id) without sorting.
CREATE INDEX tasks_status_created ON tasks (status, created_at DESC);
CREATE INDEX tasks_collaboration_status ON tasks (collaboration_id, status);
CREATE INDEX tasks_created_id ON tasks (created_at DESC, id);
DROP INDEX tasks_created;
