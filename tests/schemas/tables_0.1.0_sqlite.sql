-- The tables of release 0.1.0 (before migrations), as its create_all made them on sqlite:
-- HQ's, the tracker's and a country's SQL sink's. Frozen: the previous release, for the
-- migration tests (tests/test_migrations.py). Statements end with ';' on their own line end.

CREATE TABLE hq_notice (
	notice_id VARCHAR(16) NOT NULL,
	version INTEGER NOT NULL,
	status VARCHAR(10) NOT NULL,
	requesting_country VARCHAR(2) NOT NULL,
	target_countries JSON NOT NULL,
	person JSON,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (notice_id)
);

CREATE TABLE hq_outbox (
	id INTEGER NOT NULL,
	topic VARCHAR NOT NULL,
	"key" VARCHAR NOT NULL,
	payload BLOB NOT NULL,
	created_at DATETIME NOT NULL,
	sent_at DATETIME,
	PRIMARY KEY (id)
);

CREATE INDEX ix_hq_outbox_key_topic ON hq_outbox ("key", topic);

CREATE INDEX ix_hq_outbox_pending ON hq_outbox (sent_at, id);

CREATE TABLE hq_version (
	notice_id VARCHAR(16) NOT NULL,
	version INTEGER NOT NULL,
	payload BLOB NOT NULL,
	PRIMARY KEY (notice_id, version)
);

CREATE TABLE tracker_sent (
	country VARCHAR(2) NOT NULL,
	notice_id VARCHAR(16) NOT NULL,
	version INTEGER NOT NULL,
	action VARCHAR(8) NOT NULL,
	published_at DATETIME NOT NULL,
	broker_at DATETIME NOT NULL,
	partition INTEGER NOT NULL,
	"offset" INTEGER NOT NULL,
	received_at DATETIME,
	recorded_at DATETIME,
	rejected BOOLEAN NOT NULL,
	superseded BOOLEAN NOT NULL,
	first_at DATETIME,
	answered_at DATETIME,
	PRIMARY KEY (country, notice_id, version)
);

CREATE INDEX ix_sent_position ON tracker_sent (country, partition, "offset");

CREATE INDEX ix_sent_waiting ON tracker_sent (country, broker_at) WHERE recorded_at IS NULL AND NOT rejected;

CREATE TABLE tracker_ack (
	country VARCHAR(2) NOT NULL,
	notice_id VARCHAR(32) NOT NULL,
	version INTEGER NOT NULL,
	status VARCHAR(10) NOT NULL,
	position VARCHAR(32) NOT NULL,
	at DATETIME NOT NULL,
	broker_at DATETIME NOT NULL,
	adapter_id VARCHAR NOT NULL,
	reason VARCHAR,
	PRIMARY KEY (country, notice_id, version, status, position)
);

CREATE INDEX ix_ack_broker_at ON tracker_ack (broker_at);

CREATE TABLE tracker_response (
	country VARCHAR(2) NOT NULL,
	notice_id VARCHAR(16) NOT NULL,
	answer VARCHAR(12) NOT NULL,
	text VARCHAR,
	responder VARCHAR NOT NULL,
	at DATETIME NOT NULL,
	broker_at DATETIME NOT NULL,
	PRIMARY KEY (country, notice_id, answer)
);

CREATE TABLE tracker_group_sample (
	id INTEGER NOT NULL,
	country VARCHAR(2) NOT NULL,
	at DATETIME NOT NULL,
	end_offset INTEGER NOT NULL,
	committed INTEGER,
	members INTEGER NOT NULL,
	time_lag_s FLOAT,
	PRIMARY KEY (id)
);

CREATE INDEX ix_group_sample_country_at ON tracker_group_sample (country, at);

CREATE TABLE tracker_incident (
	id INTEGER NOT NULL,
	country VARCHAR(2) NOT NULL,
	kind VARCHAR(12) NOT NULL,
	opened_at DATETIME NOT NULL,
	open_sent BOOLEAN NOT NULL,
	closed_at DATETIME,
	close_sent BOOLEAN NOT NULL,
	detail VARCHAR NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_tracker_incident_country ON tracker_incident (country);

CREATE TABLE tracker_reminder (
	country VARCHAR(2) NOT NULL,
	notice_id VARCHAR(16) NOT NULL,
	kind VARCHAR(12) NOT NULL,
	sent_at DATETIME NOT NULL,
	PRIMARY KEY (country, notice_id, kind)
);

CREATE TABLE tracker_quarantine (
	topic VARCHAR(255) NOT NULL,
	partition INTEGER NOT NULL,
	"offset" BIGINT NOT NULL,
	reason VARCHAR NOT NULL,
	broker_at DATETIME NOT NULL,
	raw BLOB,
	PRIMARY KEY (topic, partition, "offset")
);

CREATE TABLE red_notice (
	notice_id VARCHAR(16) NOT NULL,
	version INTEGER NOT NULL,
	status VARCHAR(10) NOT NULL,
	requesting_country VARCHAR(2) NOT NULL,
	name VARCHAR,
	forename VARCHAR,
	date_of_birth VARCHAR(10),
	sex_id VARCHAR(1),
	nationalities JSON NOT NULL,
	country_of_birth_id VARCHAR(2),
	place_of_birth VARCHAR,
	distinguishing_marks VARCHAR,
	height FLOAT,
	weight FLOAT,
	eyes_colors_id JSON NOT NULL,
	hairs_id JSON NOT NULL,
	languages_spoken_ids JSON NOT NULL,
	arrest_warrants JSON NOT NULL,
	images JSON NOT NULL,
	withdrawn_reason VARCHAR,
	event_id VARCHAR(36) NOT NULL,
	published_at DATETIME NOT NULL,
	recorded_at DATETIME NOT NULL,
	PRIMARY KEY (notice_id)
);

CREATE INDEX ix_red_notice_status ON red_notice (status);

CREATE TABLE notice_response (
	id INTEGER NOT NULL,
	notice_id VARCHAR(16) NOT NULL,
	answer VARCHAR(12) NOT NULL,
	text VARCHAR,
	responder VARCHAR NOT NULL,
	answered_at DATETIME NOT NULL,
	sent_at DATETIME,
	PRIMARY KEY (id)
);

CREATE INDEX ix_notice_response_pending ON notice_response (sent_at, id);

CREATE TABLE notice_reminder (
	id INTEGER NOT NULL,
	notice_id VARCHAR(16) NOT NULL,
	version INTEGER NOT NULL,
	kind VARCHAR(12) NOT NULL,
	deadline DATETIME NOT NULL,
	reminded_at DATETIME NOT NULL,
	text VARCHAR NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_notice_reminder_notice_id ON notice_reminder (notice_id);
