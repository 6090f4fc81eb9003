/*
 * store: the gateway's durable state behind one interface.
 *
 * Engine: SQLite in WAL mode (the embedded default); PostgreSQL comes later
 * behind the same functions. Schema changes are numbered migrations applied
 * at open. One struct store is one connection: each worker thread and the
 * CLI open their own, so the CLI is safe to use while the gateway runs
 * (writers wait on busy_timeout rather than fail).
 *
 * Lookup functions return 1 when found, 0 when not, -1 on error. Other int
 * functions return 0 or -1 (or a positive STORE_E_* where documented).
 * err receives "what failed and what to do".
 */
#ifndef FG_STORE_H
#define FG_STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Open (creating when create != 0) the store at path and migrate it. */
struct store *store_open(const char *path, int create, char *err, size_t errlen);
void store_free(struct store *st);
/* Highest applied migration. */
int store_schema_version(struct store *st);

/*
 * Checkpoints in a thread of their own (the daemon). SQLite copies its WAL
 * back into the database file after a commit that grew the WAL past 1000
 * pages, inside that commit's call, so one request in many paid for it and
 * a failing checkpoint looked like a failing request. After
 * store_defer_checkpoints, connections opened by this process never
 * checkpoint; they wake the checkpointer (store_checkpointer_start, a
 * thread named fg-checkpoint with its own connection) when the WAL is that
 * long, and it also checkpoints once a second. A failed checkpoint loses
 * nothing (the commits are in the WAL): it is logged and tried again.
 * Call store_defer_checkpoints before opening the daemon's connections.
 */
void store_defer_checkpoints(void);

/*
 * Group commit (the daemon). With synchronous=FULL each commit costs an
 * fsync, and SQLite has one writer at a time: workers that each commit on
 * their own connection queue on the write lock and sleep in the busy
 * handler. After store_group_commit_start, the write transactions of an
 * enrollment (store_job_admit, store_job_admit_bound, store_serial_reserve,
 * store_job_state_put, store_job_finish) are queued instead: one thread
 * at a time takes the queue and runs every transaction in it on one writer
 * connection, each in a savepoint (one failing undoes only its own
 * writes), under one COMMIT. Each caller returns when the commit that
 * holds its writes is durable, with its own result; a failed commit fails
 * every request in it. These functions then do not touch the caller's
 * connection, so a connection shared between threads needs no lock for
 * them. Without it (the CLI), each runs alone on the caller's connection.
 */
int store_group_commit_start(const char *path, char *err, size_t errlen);
void store_group_commit_stop(void);
int store_group_commit_on(void);
/* transactions run (batches) and requests in them, since the start */
void store_group_commit_stats(unsigned long *batches, unsigned long *items);
int store_checkpointer_start(const char *path, char *err, size_t errlen);
void store_checkpointer_stop(void);

enum store_device_state {
	DEVICE_ACTIVE,
	DEVICE_REVOKED,
	DEVICE_RETIRED,           /* taken out of service: everything denied, history kept */
	DEVICE_REGISTERED,        /* pre-registered (import), not enrolled yet */
	DEVICE_STATE_MAX
};
const char *store_device_state_name(int state);

struct store_device {
	char id[40];              /* "dev_" + 16 hex */
	char curve_key[41];       /* Z85 CURVE public key bound at enrollment */
	char group[64];
	char hostname[256];
	int state;                /* enum store_device_state */
	int64_t created_at;       /* Unix seconds */
	int64_t last_seen;
	char *facts_json;         /* malloc'd JSON object, may be NULL */
};
void store_device_clear(struct store_device *d);   /* frees facts_json */

int store_device_by_key(struct store *st, const char *curve_key, struct store_device *out,
			char *err, size_t errlen);
int store_device_get(struct store *st, const char *id, struct store_device *out,
		     char *err, size_t errlen);
/* Record a check-in: last_seen, hostname and facts. */
int store_device_touch(struct store *st, const char *id, const char *hostname,
		       const char *facts_json, int64_t now, char *err, size_t errlen);
/* Calls cb for each device (ordered by created_at); cb returning non-zero stops. */
int store_device_list(struct store *st, int (*cb)(void *arg, const struct store_device *d),
		      void *arg, char *err, size_t errlen);
/* Revoke a device and mark its valid certificates revoked, in one
 * transaction, with audit records. The serials revoked are handed to cb (for
 * the backend to revoke upstream) after commit. Returns the number of
 * certificates revoked, or -1. A device already revoked is not an error. */
int store_device_revoke(struct store *st, const char *id, int64_t now,
			int (*cb)(void *arg, const char *serial_hex, const char *backend,
				  const unsigned char *der, size_t der_len),
			void *arg, char *err, size_t errlen);

struct store_token {
	char id[24];              /* "tok_" + 16 hex; the token itself is never stored */
	char group[64];
	int uses_left;
	int64_t expires_at;
	int64_t created_at;
	int revoked;
};
/* Store a new token by its hash (fg_token_hash). */
int store_token_add(struct store *st, const char *hash_hex, const char *group, int uses,
		    int64_t expires_at, int64_t now, char id_out[24], char *err, size_t errlen);
int store_token_lookup(struct store *st, const char *hash_hex, struct store_token *out,
		       char *err, size_t errlen);

enum store_job_state {
	JOB_ADMITTED,   /* durable, backend not yet done */
	JOB_PENDING,    /* backend answered pending; poll later */
	JOB_DONE,       /* final reply stored */
	JOB_FAILED,     /* final failure reply stored */
	JOB_STATE_MAX
};

struct store_job {
	char request_id[65];
	char curve_key[41];
	char device_id[40];
	char kind[16];            /* "enroll", "renew" */
	char slot[64];
	char backend[64];
	int state;                /* enum store_job_state */
	int64_t created_at;
	int64_t next_attempt;     /* for pending jobs */
	char *params_json;        /* malloc'd: decision and CSR needed to resume */
	unsigned char *reply;     /* malloc'd packed CertReply, for DONE/FAILED */
	size_t reply_len;
};
void store_job_clear(struct store_job *j);

/* The job of this request id from this client key (request ids are scoped
 * per CURVE key, so one client can never read another's result). */
int store_job_get(struct store *st, const char *curve_key, const char *request_id,
		  struct store_job *out, char *err, size_t errlen);

/* Positive results of store_job_admit. */
enum {
	STORE_E_TOKEN = 1,      /* token used up, expired, revoked or unknown */
	STORE_E_DUPLICATE = 2,  /* job exists already (a racing retry); re-read it */
	STORE_E_KEY_TAKEN = 3   /* CURVE key already bound to another device */
};

struct store_admit {
	const char *request_id;
	const char *curve_key;
	const char *kind;         /* "enroll" / "renew" */
	const char *slot;
	const char *backend;
	const char *params_json;
	const char *token_hash;   /* consume one use of this token, or NULL */
	const char *device_id;    /* existing device, or the id of a device to create */
	int create_device;        /* 1: create device_id bound to curve_key */
	const char *group;        /* for a created device */
	const char *hostname;
	const char *facts_json;
	int64_t now;
};
/* In one transaction: consume a token use (when token_hash), create the
 * device (when create_device), insert the job in JOB_ADMITTED, write audit
 * records. Returns 0, a STORE_E_* code (nothing written), or -1. Exactly one
 * of N racing admissions for a one-use token gets 0. */
int store_job_admit(struct store *st, const struct store_admit *a, char *err, size_t errlen);

/* A certificate to record with a finished job. */
struct store_cert {
	char serial_hex[41];
	char device_id[40];
	char slot[64];
	char backend[64];
	char request_id[65];
	char subject[512];
	int64_t not_before;
	int64_t not_after;
	int revoked;
	int64_t revoked_at;
	unsigned char *der;       /* malloc'd in results */
	size_t der_len;
	int64_t renew_start;      /* the renewal window (results); 0: none assigned */
	int64_t renew_end;
};
void store_cert_clear(struct store_cert *c);

/*
 * Renewal windows (docs/lifecycle.md "Renewal windows"). Each certificate
 * recorded with a rule gets a window: one hour (the part of it inside the
 * range) in which its device renews, chosen among the least loaded hours of
 * [not_before + from * life, not_before + to * life] (never later than an
 * hour or a tenth of the life before expiry), counting the windows already
 * scheduled for certificates that are current (the newest of their device
 * and slot) and not revoked. With max_per_hour > 0 and every hour of that
 * range at the ceiling, the earlier range from earliest * life is tried
 * before the ceiling is exceeded (over is then set). The tie between
 * equally loaded hours is broken by the serial, so a retried finish gets
 * the same window.
 */
struct store_renewal_rule {
	double from, to;          /* fractions of the lifetime: the preferred range */
	double earliest;          /* fraction: how early a full range may spill */
	long max_per_hour;        /* the ceiling; 0: none (the load is levelled) */
};
struct store_window {
	int64_t start, end;       /* Unix seconds; start == 0: no window */
	int over;                 /* assigned above the ceiling */
};
/* Builds the job's reply once the window is known, inside the finish's
 * transaction: *reply malloc'd, handed to the caller of
 * store_job_finish_cert. 0, or -1 (the finish fails). */
typedef int (*store_reply_fn)(void *arg, const struct store_window *w, unsigned char **reply,
			      size_t *reply_len);

/* Finish a job in one transaction: record cert (when non-NULL), set state
 * (JOB_DONE or JOB_FAILED) with the reply to return to retries, audit. */
int store_job_finish(struct store *st, const char *curve_key, const char *request_id,
		     int state, const unsigned char *reply, size_t reply_len,
		     const struct store_cert *cert, const char *audit_kind,
		     const char *audit_detail, char *err, size_t errlen);
/* store_job_finish of a done job with its certificate, whose renewal
 * window (rule non-NULL) is assigned in the same transaction and given to
 * build, which makes the reply to record. The certificate becomes the
 * current one of its device and slot: the one it replaces leaves the
 * schedule. On success *reply is build's (the caller frees it) and *win
 * the window. */
int store_job_finish_cert(struct store *st, const char *curve_key, const char *request_id,
			  const struct store_cert *cert, const struct store_renewal_rule *rule,
			  store_reply_fn build, void *build_arg, unsigned char **reply,
			  size_t *reply_len, struct store_window *win, const char *audit_kind,
			  const char *audit_detail, char *err, size_t errlen);
/* The renewal window of device_id's certificate with this serial: 1 (set,
 * start 0 when the certificate has none), 0 no such certificate, -1 error. */
int store_cert_window(struct store *st, const char *device_id, const char *serial_hex,
		      int64_t *start, int64_t *end, char *err, size_t errlen);
/* Pull the renewal windows of group's current, valid certificates (group
 * NULL: every group; slot NULL: every slot) into [from, to): each that is
 * not already renewing in it gets a window of its own hour there, levelled
 * with what is scheduled (the ceiling is not a bound here: the operator
 * asked for the range). Audited as renewal.pull_in. *moved: how many. */
int store_renewal_pull_in(struct store *st, const char *group, const char *slot, int64_t from,
			  int64_t to, long *moved, char *err, size_t errlen);
/* The renewal load: cb once per hour from `from` (Unix seconds, rounded
 * down to the hour) for `hours` hours with the renewals expected in it
 * (a window spreads its one renewal evenly over its hours; a current
 * certificate without a window counts over the agent's default: the
 * last 5% of its life before 2/3 of it, where its jitter puts it) and the certificates whose notAfter falls in it. 0 or -1. */
int store_renewal_load(struct store *st, int64_t from, long hours,
		       int (*cb)(void *arg, int64_t hour, double renewals, long expiring),
		       void *arg, char *err, size_t errlen);
/* Mark a job pending with the time of its next attempt. */
int store_job_set_pending(struct store *st, const char *curve_key, const char *request_id,
			  int64_t next_attempt, char *err, size_t errlen);
/* Jobs in JOB_ADMITTED or JOB_PENDING (to resume after a restart). */
int store_job_list_open(struct store *st, int (*cb)(void *arg, const struct store_job *j),
			void *arg, char *err, size_t errlen);

/* Per-job plugin state (fg_host job_get/job_put) and plugin-wide state. */
int store_job_state_get(struct store *st, const char *curve_key, const char *request_id,
			const char *key, unsigned char **val, size_t *len, char *err, size_t errlen);
int store_job_state_put(struct store *st, const char *curve_key, const char *request_id,
			const char *key, const unsigned char *val, size_t len, char *err, size_t errlen);
int store_plugin_state_get(struct store *st, const char *backend, const char *key,
			   unsigned char **val, size_t *len, char *err, size_t errlen);
int store_plugin_state_put(struct store *st, const char *backend, const char *key,
			   const unsigned char *val, size_t len, char *err, size_t errlen);
/* Add one to the decimal counter key (absent counts as 0), atomically
 * across processes; *out is the new value. 0 or -1 with err. */
int store_plugin_state_incr(struct store *st, const char *backend, const char *key, uint64_t *out,
			    char *err, size_t errlen);
/* 0 reserved, 1 taken, -1 error. Serials are unique per backend. */
int store_serial_reserve(struct store *st, const char *backend, const char *serial_hex,
			 int64_t now, char *err, size_t errlen);
/* 1 when serial_hex is reserved for backend (the write-ahead step before
 * a signature), 0 when not, -1 with err. */
int store_serial_reserved(struct store *st, const char *backend, const char *serial_hex, char *err,
			  size_t errlen);

int store_cert_get(struct store *st, const char *serial_hex, struct store_cert *out,
		   char *err, size_t errlen);
/* Ordered by not_before; device_id NULL for all. */
int store_cert_list(struct store *st, const char *device_id,
		    int (*cb)(void *arg, const struct store_cert *c), void *arg,
		    char *err, size_t errlen);

/* Append an audit record, chained by hash:
 * hash = SHA-256(prev_hash || seq || ts || kind || device_id || request_id || detail). */
int store_audit(struct store *st, const char *kind, const char *device_id,
		const char *request_id, const char *detail, int64_t now, char *err, size_t errlen);
/* Walk the chain; 0 when intact, -1 with err naming the first bad record. */
int store_audit_verify(struct store *st, long *records, char *err, size_t errlen);

/* Retire a device: like revoke (every valid certificate revoked, cb after
 * commit), state retired; its history stays. */
int store_device_retire(struct store *st, const char *id, int64_t now,
			int (*cb)(void *arg, const char *serial_hex, const char *backend,
				  const unsigned char *der, size_t der_len),
			void *arg, char *err, size_t errlen);

/* The per-device command queue: queued -> delivered (sent at a check-in)
 * -> done or failed (the agent's answer at a later check-in). */
enum store_command_state {
	COMMAND_QUEUED,
	COMMAND_DELIVERED,
	COMMAND_DONE,
	COMMAND_FAILED,
	COMMAND_STATE_MAX
};
const char *store_command_state_name(int state);

struct store_command {
	char id[24];              /* "cmd_" + 16 hex */
	char device_id[40];
	char kind[24];            /* renew, rekey, update-trust, rebootstrap */
	char slot[64];            /* "" = every slot */
	int state;
	int64_t created_at, delivered_at, done_at;
	char result[512];         /* the agent's message */
};

/* Queue a command for an active or registered device, with an audit
 * record; -1 with err naming an unknown or retired device. */
int store_command_add(struct store *st, const char *device_id, const char *kind, const char *slot,
		      int64_t now, char id_out[24], char *err, size_t errlen);
/* Commands of a device, oldest first; open_only: queued or delivered. */
int store_command_list(struct store *st, const char *device_id, int open_only,
		       int (*cb)(void *arg, const struct store_command *c), void *arg, char *err,
		       size_t errlen);
int store_command_delivered(struct store *st, const char *device_id, const char *id, int64_t now,
			    char *err, size_t errlen);
/* Record the agent's answer: 1 recorded (with an audit record), 0 when the
 * command is unknown, another device's or already answered, -1 on error. */
int store_command_result(struct store *st, const char *device_id, const char *id, int ok,
			 const char *message, int64_t now, char *err, size_t errlen);

struct store_audit_rec {
	long long seq;
	int64_t ts;
	char kind[32];
	char device_id[40];
	char request_id[65];
	const char *detail;       /* JSON text, valid during the callback */
};
/* Audit records with seq > after_seq (of one device when device_id is
 * set), oldest first; limit <= 0 for all; newest: the last limit ones. */
int store_audit_list(struct store *st, const char *device_id, long long after_seq, long limit,
		     int newest, int (*cb)(void *arg, const struct store_audit_rec *a), void *arg,
		     char *err, size_t errlen);

/* ---- the fleet at a glance (/healthz, /metrics, fleetgate status) ---- */

/* A cheap query that proves the store answers. 0, or -1 with err. */
int store_ping(struct store *st, char *err, size_t errlen);

/* Upper bounds (seconds) of the expiry buckets of store_summary. */
#define STORE_EXPIRY_BUCKETS 4
extern const int64_t store_expiry_bounds[STORE_EXPIRY_BUCKETS];  /* 1d, 7d, 30d, 90d */

struct store_summary {
	long devices[DEVICE_STATE_MAX];      /* by enum store_device_state */
	long certs_valid;                    /* not revoked, not expired */
	long certs_revoked;
	long certs_expired;                  /* not revoked, past not_after */
	long expiring[STORE_EXPIRY_BUCKETS]; /* valid, not_after within bound (cumulative) */
	long jobs_admitted;                  /* open jobs: the queue */
	long jobs_pending;
};
/* Counts as of now, in one read transaction. 0, or -1 with err. */
int store_fleet_summary(struct store *st, int64_t now, struct store_summary *out,
			char *err, size_t errlen);

/* Revoked certificates of one backend (for its CRL), ordered by serial.
 * cb returning non-zero stops. 0 or -1. */
int store_cert_list_revoked(struct store *st, const char *backend,
			    int (*cb)(void *arg, const char *serial_hex, int64_t revoked_at),
			    void *arg, char *err, size_t errlen);
/* How many certificates of backend are revoked (to see a CRL is stale). */
int store_cert_count_revoked(struct store *st, const char *backend, long *out,
			     char *err, size_t errlen);

/* The status of one certificate of backend, for OCSP: 1 found (revoked and
 * revoked_at set), 0 no such certificate, -1 error. */
int store_cert_status(struct store *st, const char *backend, const char *serial_hex,
		      int *revoked, int64_t *revoked_at, char *err, size_t errlen);

/* Audit records since a time, counted by kind: cb(kind, count) once per
 * kind (from the audit_time index). 0 or -1. */
int store_audit_count_since(struct store *st, int64_t since,
			    int (*cb)(void *arg, const char *kind, long count), void *arg,
			    char *err, size_t errlen);

/* ---- the dashboard (docs/dashboard.md) ---- */

/* Devices per group, in group order: cb(group, devices, active). 0 or -1. */
int store_group_counts(struct store *st,
		       int (*cb)(void *arg, const char *group, long devices, long active), void *arg,
		       char *err, size_t errlen);
/* One page of devices in id order: those after id `after` ("" or NULL:
 * from the first), at most limit, of group (NULL: any) in state (-1:
 * any); *total counts every device the filter matches, from the same
 * snapshot. cb returning non-zero stops. 0 or -1. */
int store_device_page(struct store *st, const char *group, int state, const char *after, long limit,
		      int (*cb)(void *arg, const struct store_device *d), void *arg, long *total,
		      char *err, size_t errlen);
/* Audit records since a time, counted per hour (Unix seconds at the
 * hour's start) and kind: cb once per pair that has records. 0 or -1. */
int store_audit_hourly(struct store *st, int64_t since,
		       int (*cb)(void *arg, int64_t hour, const char *kind, long count), void *arg,
		       char *err, size_t errlen);

/* ---- bulk provisioning and token administration ---- */

/* A token with everything the store knows about it. */
struct store_token_info {
	struct store_token t;
	char device_id[40];       /* pre-registered device it is bound to, or "" */
	char *bound_json;         /* malloc'd JSON object of bound attributes, or NULL */
};
void store_token_info_clear(struct store_token_info *ti);   /* frees bound_json */

/* Store a new token bound to a pre-registered device (device_id, or NULL)
 * and/or to attributes (bound_json, or NULL), with a token.create audit
 * record, in one transaction. -1 with err naming an unknown device or one
 * that is not in state registered. */
int store_token_add_bound(struct store *st, const char *hash_hex, const char *group, int uses,
			  int64_t expires_at, const char *device_id, const char *bound_json, int64_t now,
			  char id_out[24], char *err, size_t errlen);
/* A token by id (id != NULL) or by hash: 1 found, 0 not, -1 error. */
int store_token_info_get(struct store *st, const char *id, const char *hash_hex,
			 struct store_token_info *out, char *err, size_t errlen);
/* Every token, oldest first; cb returning non-zero stops. */
int store_token_list(struct store *st, int (*cb)(void *arg, const struct store_token_info *ti),
		     void *arg, char *err, size_t errlen);
/* Revoke a token with a token.revoke audit record: 1 revoked, 2 it was
 * revoked already (nothing written), 0 no such token, -1 error. */
int store_token_revoke(struct store *st, const char *id, int64_t now, char *err, size_t errlen);

/* A device's serial and free attributes (JSON object text, malloc'd, or
 * NULL): 1 found, 0 not, -1 error. */
int store_device_attrs_get(struct store *st, const char *id, char serial[65], char **attrs_json,
			   char *err, size_t errlen);

/*
 * Bulk import: store_import_begin opens one write transaction, each
 * store_import_device registers one device with its one-use token inside
 * it, and store_import_commit (with a device.import audit record) or
 * store_import_abort ends it. Nothing is visible to others before commit.
 */
struct store_import_row {
	const char *serial;       /* unique, non-empty */
	const char *hostname;     /* may be "" */
	const char *group;
	const char *attrs_json;   /* JSON object of the free columns, or NULL */
	const char *token_hash;   /* the device's one-use token */
	int64_t token_expires;
};
enum {
	STORE_IMPORT_ADDED = 0,
	STORE_IMPORT_UNCHANGED = 1,   /* serial registered before with the same data */
	STORE_IMPORT_CONFLICT = 2     /* serial registered before with other data; err says what */
};
int store_import_begin(struct store *st, char *err, size_t errlen);
/* STORE_IMPORT_*, or -1 (the transaction then can only be aborted). */
int store_import_device(struct store *st, const struct store_import_row *r, int64_t now,
			char dev_id[40], char tok_id[24], char *err, size_t errlen);
int store_import_commit(struct store *st, const char *audit_detail, int64_t now, char *err,
			size_t errlen);
void store_import_abort(struct store *st);

/* Positive result of store_job_admit_bound. */
enum {
	STORE_E_NOT_REGISTERED = 4   /* the bound device is no longer waiting for enrollment */
};
/* First enrollment with a token bound to a pre-registered device
 * (a->device_id; a->create_device is ignored): in one transaction consume
 * the token (which must be bound to that device), bind a->curve_key to the
 * device (registered -> active, the "pre:" placeholder replaced, hostname
 * kept unless empty, facts recorded), insert the job and audit records.
 * 0, STORE_E_TOKEN, STORE_E_KEY_TAKEN, STORE_E_NOT_REGISTERED,
 * STORE_E_DUPLICATE (nothing written), or -1. */
int store_job_admit_bound(struct store *st, const struct store_admit *a, char *err, size_t errlen);

#endif
