-- The schema as Cellbox's stop-9 release (commit 96da89e) made it with create_all, before migrations began.
-- Frozen: never edit it; a later release's schema gets a file of its own.

CREATE TABLE api_keys (
	hash VARCHAR(64) NOT NULL,
	project VARCHAR(200) NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (hash)
);

CREATE INDEX ix_api_keys_project ON api_keys (project);

CREATE TABLE containers (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	project VARCHAR(200) NOT NULL,
	name TEXT NOT NULL,
	status VARCHAR(16) NOT NULL,
	created_at BIGINT NOT NULL,
	last_active_at BIGINT NOT NULL,
	expiry_minutes INTEGER NOT NULL,
	memory_limit VARCHAR(8) NOT NULL,
	workspace TEXT,
	PRIMARY KEY (seq),
	UNIQUE (id)
);

CREATE INDEX ix_containers_project_seq ON containers (project, seq);

CREATE TABLE conversations (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	project VARCHAR(200) NOT NULL,
	created_at BIGINT NOT NULL,
	metadata JSON NOT NULL,
	PRIMARY KEY (seq),
	UNIQUE (id)
);

CREATE INDEX ix_conversations_project ON conversations (project);

CREATE TABLE files (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	project VARCHAR(200) NOT NULL,
	filename TEXT NOT NULL,
	purpose VARCHAR(32) NOT NULL,
	bytes BIGINT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT,
	PRIMARY KEY (seq),
	UNIQUE (id)
);

CREATE INDEX ix_files_project_seq ON files (project, seq);

CREATE TABLE responses (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	project VARCHAR(200) NOT NULL,
	created_at BIGINT NOT NULL,
	status VARCHAR(16) NOT NULL,
	previous_response_id VARCHAR(64),
	body JSON NOT NULL,
	PRIMARY KEY (seq),
	UNIQUE (id)
);

CREATE INDEX ix_responses_project ON responses (project);

CREATE TABLE container_files (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	container_id VARCHAR(64) NOT NULL,
	path TEXT NOT NULL,
	bytes BIGINT NOT NULL,
	source VARCHAR(16) NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (seq),
	UNIQUE (container_id, path),
	UNIQUE (id),
	FOREIGN KEY(container_id) REFERENCES containers (id) ON DELETE CASCADE
);

CREATE INDEX ix_container_files_container_seq ON container_files (container_id, seq);

CREATE TABLE container_networks (
	container_id VARCHAR(64) NOT NULL,
	allowed_domains JSON NOT NULL,
	had_secrets BOOLEAN NOT NULL,
	PRIMARY KEY (container_id),
	FOREIGN KEY(container_id) REFERENCES containers (id) ON DELETE CASCADE
);

CREATE TABLE conversation_items (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	conversation_id VARCHAR(64) NOT NULL,
	body JSON NOT NULL,
	PRIMARY KEY (seq),
	UNIQUE (conversation_id, id),
	FOREIGN KEY(conversation_id) REFERENCES conversations (id) ON DELETE CASCADE
);

CREATE INDEX ix_conversation_items_conversation_seq ON conversation_items (conversation_id, seq);

CREATE TABLE response_items (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	response_id VARCHAR(64) NOT NULL,
	body JSON NOT NULL,
	PRIMARY KEY (seq),
	UNIQUE (response_id, id),
	FOREIGN KEY(response_id) REFERENCES responses (id) ON DELETE CASCADE
);

CREATE INDEX ix_response_items_response_seq ON response_items (response_id, seq);

CREATE TABLE stored_items (
	seq BIGSERIAL NOT NULL,
	id VARCHAR(64) NOT NULL,
	project VARCHAR(200) NOT NULL,
	response_id VARCHAR(64) NOT NULL,
	body JSON NOT NULL,
	PRIMARY KEY (seq),
	FOREIGN KEY(response_id) REFERENCES responses (id) ON DELETE CASCADE
);

CREATE INDEX ix_stored_items_project_id ON stored_items (project, id);
