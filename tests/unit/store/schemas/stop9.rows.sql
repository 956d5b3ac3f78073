-- One row of every kind, as the stop-9 release wrote them (valid on SQLite and PostgreSQL alike).
INSERT INTO api_keys (hash, project, created_at) VALUES ('h1', 'project-a', 1764633600);
INSERT INTO files (id, project, filename, purpose, bytes, created_at, expires_at)
    VALUES ('file-1', 'project-a', 'data.csv', 'user_data', 4, 1764633600, NULL);
INSERT INTO containers (id, project, name, status, created_at, last_active_at, expiry_minutes, memory_limit, workspace)
    VALUES ('cntr_1', 'project-a', 'kept', 'expired', 1764633600, 1764633660, 20, '1g', NULL);
INSERT INTO container_networks (container_id, allowed_domains, had_secrets) VALUES ('cntr_1', '["pypi.org"]', false);
INSERT INTO container_files (id, container_id, path, bytes, source, created_at)
    VALUES ('cfile_1', 'cntr_1', '/mnt/data/data.csv', 4, 'user', 1764633600);
INSERT INTO responses (id, project, created_at, status, previous_response_id, body)
    VALUES ('resp_1', 'project-a', 1764633600, 'completed', NULL, '{"id": "resp_1", "object": "response"}');
INSERT INTO response_items (id, response_id, body) VALUES ('msg_1', 'resp_1', '{"type": "message"}');
INSERT INTO stored_items (id, project, response_id, body) VALUES ('msg_1', 'project-a', 'resp_1', '{"type": "message"}');
INSERT INTO conversations (id, project, created_at, metadata) VALUES ('conv_1', 'project-a', 1764633600, '{"k": "v"}');
INSERT INTO conversation_items (id, conversation_id, body) VALUES ('msg_1', 'conv_1', '{"type": "message"}');
