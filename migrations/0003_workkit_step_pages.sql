-- workkit-workflow history projection (schema version 3): a page of plain completed steps a row
DROP VIEW IF EXISTS wf_transitions;
ALTER TABLE wf_steps RENAME TO wf_step_rows;
CREATE TABLE IF NOT EXISTS wf_step_pages (
  execution_id TEXT NOT NULL,
  phase TEXT NOT NULL,
  block INTEGER NOT NULL,
  steps TEXT NOT NULL,
  PRIMARY KEY (execution_id, phase, block)
);
CREATE VIEW IF NOT EXISTS wf_steps AS
  SELECT execution_id, phase, op, name, kind, status, attempt, started_at, attempt_started_at, finished_at, retry_at, wake_at, event_type, error, errors, restored_from, seq, started_seq, finished_seq FROM wf_step_rows AS r
  WHERE NOT EXISTS (
    SELECT 1 FROM wf_step_pages AS p
    WHERE p.execution_id = r.execution_id AND p.phase = r.phase AND p.block = r.op / 100
      AND json_type(p.steps, '$."' || printf('%08d', r.op) || '"') IS NOT NULL
  )
  UNION ALL
  SELECT p.execution_id, p.phase, CAST(e.key AS INTEGER), json_extract(e.value, '$[0]'), 'step',
    'completed', json_extract(e.value, '$[1]'), json_extract(e.value, '$[2]') / 1000.0,
    COALESCE(json_extract(e.value, '$[3]'), json_extract(e.value, '$[2]')) / 1000.0,
    json_extract(e.value, '$[4]') / 1000.0,
    NULL, NULL, NULL, NULL, '[]', NULL,
    json_extract(e.value, '$[5]'),
    COALESCE(json_extract(e.value, '$[6]'), (
      SELECT r.started_seq FROM wf_step_rows AS r
      WHERE r.execution_id = p.execution_id AND r.phase = p.phase AND r.op = CAST(e.key AS INTEGER)
    )),
    json_extract(e.value, '$[5]')
  FROM wf_step_pages AS p, json_each(p.steps) AS e;
CREATE VIEW IF NOT EXISTS wf_transitions AS
  SELECT execution_id, seq, at, kind, phase, op, name, status, attempt, detail FROM wf_events
  UNION ALL
  SELECT execution_id, started_seq, started_at, 'step', phase, op, name, 'running', 1, '{}'
  FROM wf_steps WHERE started_seq IS NOT NULL
  UNION ALL
  SELECT execution_id, finished_seq, finished_at, 'step', phase, op, name, 'completed', attempt, '{}'
  FROM wf_steps WHERE finished_seq IS NOT NULL;
