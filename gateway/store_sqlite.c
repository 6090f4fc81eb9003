/*
 * store_sqlite.c: the store on SQLite (see store.h).
 *
 * WAL mode with synchronous=FULL: a commit is on disk when it returns, which
 * the write-ahead issuance protocol relies on. One connection per struct
 * store; write transactions are BEGIN IMMEDIATE so writers queue on the
 * busy timeout instead of failing half-way.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "fg_log.h"
#include "fg_util.h"
#include "store.h"

#define BUSY_MS 10000

#define STMT_CACHE 96

/* WAL pages after which a commit wakes the checkpointer (SQLite's own
 * autocheckpoint threshold), and its period otherwise */
#define CKPT_PAGES 1000
#define CKPT_PERIOD_S 1

struct store {
	sqlite3 *db;
	char path[4096];
	/* Prepared statements kept for the connection's life, keyed by the
	 * address of their SQL text (always a string literal here). */
	struct {
		const char *sql;
		sqlite3_stmt *stmt;
	} cache[STMT_CACHE];
	int ncache;
};

static const char *const migrations[] = {
	/* 1: the first schema */
	"CREATE TABLE devices ("
	"  id TEXT PRIMARY KEY, curve_key TEXT NOT NULL UNIQUE, grp TEXT NOT NULL DEFAULT '',"
	"  hostname TEXT NOT NULL DEFAULT '', state INTEGER NOT NULL DEFAULT 0,"
	"  created_at INTEGER NOT NULL, last_seen INTEGER NOT NULL DEFAULT 0, facts_json TEXT);"
	"CREATE TABLE tokens ("
	"  id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, grp TEXT NOT NULL,"
	"  uses_left INTEGER NOT NULL, expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL,"
	"  revoked INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE jobs ("
	"  curve_key TEXT NOT NULL, request_id TEXT NOT NULL, device_id TEXT NOT NULL,"
	"  kind TEXT NOT NULL, slot TEXT NOT NULL, backend TEXT NOT NULL, state INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, next_attempt INTEGER NOT NULL DEFAULT 0,"
	"  params_json TEXT, reply BLOB, PRIMARY KEY (curve_key, request_id));"
	"CREATE INDEX jobs_open ON jobs(state) WHERE state < 2;"
	"CREATE TABLE job_state ("
	"  curve_key TEXT NOT NULL, request_id TEXT NOT NULL, key TEXT NOT NULL, value BLOB,"
	"  PRIMARY KEY (curve_key, request_id, key));"
	"CREATE TABLE plugin_state ("
	"  backend TEXT NOT NULL, key TEXT NOT NULL, value BLOB, PRIMARY KEY (backend, key));"
	"CREATE TABLE serials ("
	"  backend TEXT NOT NULL, serial_hex TEXT NOT NULL, reserved_at INTEGER NOT NULL,"
	"  PRIMARY KEY (backend, serial_hex));"
	"CREATE TABLE certificates ("
	"  serial_hex TEXT NOT NULL, backend TEXT NOT NULL, device_id TEXT NOT NULL,"
	"  slot TEXT NOT NULL, request_id TEXT NOT NULL, subject TEXT NOT NULL,"
	"  not_before INTEGER NOT NULL, not_after INTEGER NOT NULL,"
	"  revoked INTEGER NOT NULL DEFAULT 0, revoked_at INTEGER NOT NULL DEFAULT 0, der BLOB NOT NULL,"
	"  PRIMARY KEY (backend, serial_hex));"
	"CREATE INDEX certificates_device ON certificates(device_id);"
	"CREATE INDEX certificates_serial ON certificates(serial_hex);"
	"CREATE TABLE audit ("
	"  seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL,"
	"  device_id TEXT NOT NULL DEFAULT '', request_id TEXT NOT NULL DEFAULT '',"
	"  detail TEXT NOT NULL DEFAULT '', prev_hash TEXT NOT NULL, hash TEXT NOT NULL);",
	/* 2: running a fleet: pre-registered devices (serial, free attributes;
	 * until enrollment their curve_key is "pre:" + id), tokens bound to a
	 * device or to attributes, and the per-device command queue */
	"ALTER TABLE devices ADD COLUMN serial TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE devices ADD COLUMN attrs_json TEXT;"
	"CREATE UNIQUE INDEX devices_serial ON devices(serial) WHERE serial <> '';"
	"ALTER TABLE tokens ADD COLUMN device_id TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE tokens ADD COLUMN bound_json TEXT;"
	"CREATE TABLE commands ("
	"  id TEXT PRIMARY KEY, device_id TEXT NOT NULL, kind TEXT NOT NULL,"
	"  slot TEXT NOT NULL DEFAULT '', state INTEGER NOT NULL DEFAULT 0,"
	"  created_at INTEGER NOT NULL, delivered_at INTEGER NOT NULL DEFAULT 0,"
	"  done_at INTEGER NOT NULL DEFAULT 0, result TEXT NOT NULL DEFAULT '');"
	"CREATE INDEX commands_device ON commands(device_id, state);",
	/* 3: renewal windows. current: the newest certificate of its device
	 * and slot (the one whose renewal is due); renew_bucket: the hour
	 * (Unix seconds / 3600) whose load the window counts in, kept in
	 * renewal_hours by triggers so that no code path can forget it */
	"ALTER TABLE certificates ADD COLUMN current INTEGER NOT NULL DEFAULT 1;"
	"ALTER TABLE certificates ADD COLUMN renew_start INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE certificates ADD COLUMN renew_end INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE certificates ADD COLUMN renew_bucket INTEGER;"
	"UPDATE certificates SET current = 0 WHERE rowid NOT IN"
	"  (SELECT max(rowid) FROM certificates GROUP BY device_id, slot);"
	"CREATE INDEX certificates_live ON certificates(not_after, not_before, renew_start, renew_end)"
	"  WHERE current = 1 AND revoked = 0;"
	"CREATE INDEX certificates_slot ON certificates(device_id, slot) WHERE current = 1;"
	"CREATE TABLE renewal_hours (hour INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
	/* the dashboard's paged and grouped device queries, and its counts,
	 * from indexes rather than the rows (which carry the DER) */
	"CREATE INDEX devices_grp ON devices(grp, state, id);"
	"CREATE INDEX devices_state ON devices(state, id);"
	"CREATE INDEX certificates_expiry ON certificates(revoked, not_after);"
	"CREATE INDEX audit_device ON audit(device_id, seq);"
	"CREATE INDEX audit_time ON audit(ts, kind);"
	"CREATE TRIGGER certificates_renew_ins AFTER INSERT ON certificates"
	"  WHEN NEW.renew_bucket IS NOT NULL AND NEW.current = 1 AND NEW.revoked = 0 BEGIN"
	"  INSERT INTO renewal_hours (hour, n) VALUES (NEW.renew_bucket, 1)"
	"    ON CONFLICT (hour) DO UPDATE SET n = n + 1; END;"
	"CREATE TRIGGER certificates_renew_upd AFTER UPDATE OF renew_bucket, current, revoked ON certificates BEGIN"
	"  UPDATE renewal_hours SET n = n - 1"
	"    WHERE hour = OLD.renew_bucket AND OLD.current = 1 AND OLD.revoked = 0;"
	"  INSERT INTO renewal_hours (hour, n) SELECT NEW.renew_bucket, 1"
	"    WHERE NEW.renew_bucket IS NOT NULL AND NEW.current = 1 AND NEW.revoked = 0"
	"    ON CONFLICT (hour) DO UPDATE SET n = n + 1; END;"
	"CREATE TRIGGER certificates_renew_del AFTER DELETE ON certificates"
	"  WHEN OLD.renew_bucket IS NOT NULL AND OLD.current = 1 AND OLD.revoked = 0 BEGIN"
	"  UPDATE renewal_hours SET n = n - 1 WHERE hour = OLD.renew_bucket; END;",
};
#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static const char *const device_state_names[DEVICE_STATE_MAX] = { "active", "revoked", "retired",
	"registered" };

const char *store_device_state_name(int state)
{
	return state >= 0 && state < DEVICE_STATE_MAX ? device_state_names[state] : "unknown";
}

static int dberr(struct store *st, char *err, size_t errlen, const char *what)
{
	int code = sqlite3_errcode(st->db);
	if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
		fg_seterr(err, errlen, "store %s: %s busy for %d s: another process holds a write lock; retry",
			  st->path, what, BUSY_MS / 1000);
	else
		fg_seterr(err, errlen, "store %s: %s failed: %s", st->path, what, sqlite3_errmsg(st->db));
	return -1;
}

static int exec(struct store *st, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return dberr(st, err, errlen, sql);
	return 0;
}

static int begin(struct store *st, char *err, size_t errlen)
{
	return exec(st, "BEGIN IMMEDIATE", err, errlen);
}

static int commit(struct store *st, char *err, size_t errlen)
{
	if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		dberr(st, err, errlen, "commit");
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static void rollback(struct store *st)
{
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- group commit ---- */

/* A write transaction's body: runs inside a transaction it must not begin,
 * commit or roll back; 0 to keep its writes, anything else to undo them
 * (that value is what the caller gets). */
typedef int (*tx_body)(struct store *st, void *arg, char *err, size_t errlen);

struct tx_req {
	tx_body body;
	void *arg;
	int rc;
	int done;
	char err[512];
	struct tx_req *next;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct store *st;                /* the writer connection; NULL: group commit off */
	int leading;                     /* a thread is running a batch */
	struct tx_req *head, **tail;
	unsigned long batches, items;    /* for store_group_commit_stats */
} gc = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .tail = &gc.head };

/* Run the bodies of a batch in as few transactions as possible: each in a
 * savepoint, so that one body's failure undoes only its own writes, then
 * one COMMIT (one fsync) for all. When SQLite itself rolled the whole
 * transaction back (a full disk, an I/O error), the bodies run in it so
 * far fail with that error and the rest go on in a new transaction. */
static void run_batch(struct store *st, struct tx_req *batch)
{
	struct tx_req *first = batch;    /* first request of the open transaction */

	while (first != NULL) {
		struct tx_req *q, *end = NULL;
		char berr[512] = "";
		if (begin(st, berr, sizeof berr) != 0) {
			for (q = first; q != NULL; q = q->next) {
				q->rc = -1;
				fg_strlcpy(q->err, berr, sizeof q->err);
			}
			return;
		}
		for (q = first; q != NULL; q = q->next) {
			q->err[0] = '\0';
			if (sqlite3_exec(st->db, "SAVEPOINT grp", NULL, NULL, NULL) != SQLITE_OK) {
				q->rc = dberr(st, q->err, sizeof q->err, "savepoint");
			} else {
				q->rc = q->body(st, q->arg, q->err, sizeof q->err);
				if (q->rc != 0 && !sqlite3_get_autocommit(st->db))
					sqlite3_exec(st->db, "ROLLBACK TO grp", NULL, NULL, NULL);
				if (!sqlite3_get_autocommit(st->db))
					sqlite3_exec(st->db, "RELEASE grp", NULL, NULL, NULL);
			}
			if (sqlite3_get_autocommit(st->db)) {
				/* the transaction is gone, and with it what the bodies
				 * before this one wrote */
				if (q->rc == 0)
					q->rc = -1;
				if (q->err[0] == '\0')
					fg_seterr(q->err, sizeof q->err, "store %s: the transaction was rolled back: %s",
						  st->path, sqlite3_errmsg(st->db));
				for (struct tx_req *p = first; p != q; p = p->next)
					if (p->rc == 0) {
						p->rc = -1;
						fg_strlcpy(p->err, q->err, sizeof p->err);
					}
				end = q->next;
				break;
			}
		}
		if (q == NULL) {         /* every body ran: commit them together */
			char cerr[512] = "";
			if (commit(st, cerr, sizeof cerr) != 0)
				for (struct tx_req *p = first; p != NULL; p = p->next)
					if (p->rc == 0) {
						p->rc = -1;
						fg_strlcpy(p->err, cerr, sizeof p->err);
					}
			return;
		}
		first = end;
	}
}

/* One write transaction around body: in a process with group commit on,
 * queued with the other threads' and run by whichever of them leads (on
 * the writer connection, not on st); else on st, alone. */
static int write_tx(struct store *st, tx_body body, void *arg, char *err, size_t errlen)
{
	struct tx_req me = { .body = body, .arg = arg };

	pthread_mutex_lock(&gc.mu);
	if (gc.st == NULL) {
		pthread_mutex_unlock(&gc.mu);
		if (begin(st, err, errlen) != 0)
			return -1;
		int rc = body(st, arg, err, errlen);
		if (rc != 0) {
			rollback(st);
			return rc;
		}
		return commit(st, err, errlen);
	}
	*gc.tail = &me;
	gc.tail = &me.next;
	while (!me.done) {
		if (gc.leading) {
			pthread_cond_wait(&gc.cv, &gc.mu);
			continue;
		}
		/* lead: take the queue (this request is in it) */
		struct tx_req *batch = gc.head;
		unsigned long n = 0;
		gc.head = NULL;
		gc.tail = &gc.head;
		gc.leading = 1;
		pthread_mutex_unlock(&gc.mu);
		run_batch(gc.st, batch);
		pthread_mutex_lock(&gc.mu);
		for (struct tx_req *q = batch, *next; q != NULL; q = next) {
			next = q->next;     /* q may go away once done is set */
			q->done = 1;
			n++;
		}
		gc.batches++;
		gc.items += n;
		gc.leading = 0;
		pthread_cond_broadcast(&gc.cv);
	}
	pthread_mutex_unlock(&gc.mu);
	if (me.rc != 0)
		fg_seterr(err, errlen, "%s", me.err);
	return me.rc;
}

int store_group_commit_start(const char *path, char *err, size_t errlen)
{
	struct store *st = store_open(path, 0, err, errlen);
	if (st == NULL)
		return -1;
	pthread_mutex_lock(&gc.mu);
	if (gc.st != NULL) {
		pthread_mutex_unlock(&gc.mu);
		store_free(st);
		fg_seterr(err, errlen, "group commit is already on");
		return -1;
	}
	gc.st = st;
	pthread_mutex_unlock(&gc.mu);
	return 0;
}

void store_group_commit_stop(void)
{
	pthread_mutex_lock(&gc.mu);
	while (gc.leading || gc.head != NULL)
		pthread_cond_wait(&gc.cv, &gc.mu);
	struct store *st = gc.st;
	gc.st = NULL;
	pthread_mutex_unlock(&gc.mu);
	store_free(st);
}

int store_group_commit_on(void)
{
	pthread_mutex_lock(&gc.mu);
	int on = gc.st != NULL;
	pthread_mutex_unlock(&gc.mu);
	return on;
}

void store_group_commit_stats(unsigned long *batches, unsigned long *items)
{
	pthread_mutex_lock(&gc.mu);
	*batches = gc.batches;
	*items = gc.items;
	pthread_mutex_unlock(&gc.mu);
}

/* A prepared statement for a literal SQL text, from the connection's cache
 * (prepared on first use). Hand it back with release(), which resets it and
 * so ends its read of the database. A cached statement is not re-entrant:
 * a listing's callback must not run the same listing on this connection. */
static sqlite3_stmt *prep(struct store *st, const char *sql, char *err, size_t errlen)
{
	sqlite3_stmt *s = NULL;
	for (int i = 0; i < st->ncache; i++)
		if (st->cache[i].sql == sql)
			return st->cache[i].stmt;
	if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
		dberr(st, err, errlen, "prepare");
		return NULL;
	}
	if (st->ncache < STMT_CACHE) {
		st->cache[st->ncache].sql = sql;
		st->cache[st->ncache].stmt = s;
		st->ncache++;
	}
	return s;
}

/* Done with a statement from prep(): reset a cached one (which also ends
 * its read of the database), finalize any other. */
static void release(struct store *st, sqlite3_stmt *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < st->ncache; i++)
		if (st->cache[i].stmt == s) {
			sqlite3_reset(s);
			sqlite3_clear_bindings(s);
			return;
		}
	sqlite3_finalize(s);
}

/* Step a prepared and bound statement once and hand it back with release().
 * Returns SQLITE_DONE or SQLITE_ROW, else the extended error code (so a
 * caller can tell SQLITE_CONSTRAINT_UNIQUE from _PRIMARYKEY); the message
 * stays on the connection for dberr(). */
static int step_done(struct store *st, sqlite3_stmt *s)
{
	int r = sqlite3_step(s);
	if (r != SQLITE_DONE && r != SQLITE_ROW)
		r = sqlite3_extended_errcode(st->db);
	release(st, s);
	return r;
}

static const char *nz(const char *v)
{
	return v ? v : "";
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
	sqlite3_bind_text(s, i, v ? v : "", -1, SQLITE_TRANSIENT);
}

static void col_text(sqlite3_stmt *s, int i, char *dst, size_t n)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	fg_strlcpy(dst, t ? (const char *)t : "", n);
}

/* A text column as a borrowed string ("" for NULL), valid until the next step. */
static const char *col_str(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? (const char *)t : "";
}

static char *col_strdup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? strdup((const char *)t) : NULL;
}

static unsigned char *col_blob(sqlite3_stmt *s, int i, size_t *len)
{
	int n = sqlite3_column_bytes(s, i);
	const void *b = sqlite3_column_blob(s, i);
	*len = 0;
	if (b == NULL || n <= 0)
		return NULL;
	unsigned char *out = malloc((size_t)n);
	if (out) {
		memcpy(out, b, (size_t)n);
		*len = (size_t)n;
	}
	return out;
}

/* Bring the schema up to NMIGRATIONS: each missing migration with its
 * schema_migrations row in one transaction, re-checked under the write lock
 * so two processes opening a new store at once apply it once. A schema newer
 * than this code is refused rather than used half-understood. */
static int migrate(struct store *st, char *err, size_t errlen)
{
	int have = 0;
	if (exec(st, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
		 err, errlen) != 0)
		return -1;
	have = store_schema_version(st);
	if (have > NMIGRATIONS) {
		fg_seterr(err, errlen, "store %s has schema version %d, newer than this fleetgate knows (%d); upgrade fleetgate",
			  st->path, have, NMIGRATIONS);
		return -1;
	}
	for (int v = have + 1; v <= NMIGRATIONS; v++) {
		char sql[128];
		if (begin(st, err, errlen) != 0)
			return -1;
		if (store_schema_version(st) >= v) {   /* another process migrated meanwhile */
			rollback(st);
			continue;
		}
		snprintf(sql, sizeof sql, "INSERT INTO schema_migrations VALUES (%d, %lld)", v,
			 (long long)fg_now());
		if (sqlite3_exec(st->db, migrations[v - 1], NULL, NULL, NULL) != SQLITE_OK) {
			char what[64];
			snprintf(what, sizeof what, "schema migration %d", v);
			dberr(st, err, errlen, what);
			rollback(st);
			return -1;
		}
		if (exec(st, sql, err, errlen) != 0) {
			rollback(st);
			return -1;
		}
		if (commit(st, err, errlen) != 0)
			return -1;
	}
	return 0;
}

/* ---- the checkpointer ---- */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int defer, started, stop, wake;
	pthread_t thread;
	struct store *st;
} ckpt = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static int checkpoints_deferred(void)
{
	return __atomic_load_n(&ckpt.defer, __ATOMIC_ACQUIRE);
}

/* Replaces SQLite's autocheckpoint hook: runs inside each commit, so it
 * only signals. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	(void)arg;
	(void)db;
	(void)name;
	if (pages >= CKPT_PAGES) {
		pthread_mutex_lock(&ckpt.mu);
		ckpt.wake = 1;
		pthread_cond_signal(&ckpt.cv);
		pthread_mutex_unlock(&ckpt.mu);
	}
	return SQLITE_OK;
}

void store_defer_checkpoints(void)
{
	__atomic_store_n(&ckpt.defer, 1, __ATOMIC_RELEASE);
}

/* One passive checkpoint (it never waits for readers or writers); a run of
 * failures is logged when it starts, every minute while it lasts, and when
 * it ends. */
static void checkpoint_once(int *failures)
{
	int log_pages = 0, done_pages = 0;
	int rc = sqlite3_wal_checkpoint_v2(ckpt.st->db, "main", SQLITE_CHECKPOINT_PASSIVE, &log_pages,
					   &done_pages);
	if (rc == SQLITE_OK || rc == SQLITE_BUSY) {
		if (rc == SQLITE_OK && *failures > 0) {
			fg_info("store", NULL, "the store's WAL is checkpointed into %s again, after %d failed attempts",
				ckpt.st->path, *failures);
			*failures = 0;
		}
		return;
	}
	if ((*failures)++ % 60 == 0)
		fg_warn("store", NULL, "cannot checkpoint the store's WAL into %s: %s; nothing committed is lost (it stays in the WAL, which grows), retrying every %d s; check the disk for space and I/O errors",
			ckpt.st->path, sqlite3_errmsg(ckpt.st->db), CKPT_PERIOD_S);
}

static void *checkpointer_main(void *arg)
{
	int failures = 0;

	(void)arg;
	prctl(PR_SET_NAME, "fg-checkpoint", 0, 0, 0);
	pthread_mutex_lock(&ckpt.mu);
	while (!ckpt.stop) {
		if (!ckpt.wake) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += CKPT_PERIOD_S;
			pthread_cond_timedwait(&ckpt.cv, &ckpt.mu, &ts);
		}
		ckpt.wake = 0;
		pthread_mutex_unlock(&ckpt.mu);
		checkpoint_once(&failures);
		pthread_mutex_lock(&ckpt.mu);
	}
	pthread_mutex_unlock(&ckpt.mu);
	checkpoint_once(&failures);   /* what the last requests committed */
	return NULL;
}

int store_checkpointer_start(const char *path, char *err, size_t errlen)
{
	if (ckpt.started) {
		fg_seterr(err, errlen, "the store's checkpointer is already running");
		return -1;
	}
	if ((ckpt.st = store_open(path, 0, err, errlen)) == NULL)
		return -1;
	ckpt.stop = ckpt.wake = 0;
	if (pthread_create(&ckpt.thread, NULL, checkpointer_main, NULL) != 0) {
		fg_seterr(err, errlen, "cannot start the store's checkpointer thread: out of memory or threads?");
		store_free(ckpt.st);
		ckpt.st = NULL;
		return -1;
	}
	ckpt.started = 1;
	return 0;
}

void store_checkpointer_stop(void)
{
	if (!ckpt.started)
		return;
	pthread_mutex_lock(&ckpt.mu);
	ckpt.stop = 1;
	pthread_cond_signal(&ckpt.cv);
	pthread_mutex_unlock(&ckpt.mu);
	pthread_join(ckpt.thread, NULL);
	store_free(ckpt.st);
	ckpt.st = NULL;
	ckpt.started = 0;
}

/* ---- opening ---- */

struct store *store_open(const char *path, int create, char *err, size_t errlen)
{
	struct stat sb;
	struct store *st;

	if (!create && stat(path, &sb) != 0) {
		fg_seterr(err, errlen, "no store at %s; run `fleetgate init --state DIR` first", path);
		return NULL;
	}
	st = calloc(1, sizeof *st);
	if (st == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	fg_strlcpy(st->path, path, sizeof st->path);
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
	if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
		fg_seterr(err, errlen, "cannot open store %s: %s; check that its directory exists and is writable by this user",
			  path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, BUSY_MS);
	if (checkpoints_deferred())
		sqlite3_wal_hook(st->db, wal_hook, NULL);
	/* The WAL and its index stay when the last connection closes: the
	 * confined daemon holds rules on these files' inodes for its life
	 * (confine.c) and may not make new ones. Temporary tables and sorts
	 * stay in memory for the same reason. */
	int persist = 1;
	sqlite3_file_control(st->db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
	if (exec(st, "PRAGMA journal_mode=WAL", err, errlen) != 0 ||
	    exec(st, "PRAGMA journal_size_limit=67108864", err, errlen) != 0 ||
	    exec(st, "PRAGMA temp_store=MEMORY", err, errlen) != 0 ||
	    exec(st, "PRAGMA synchronous=FULL", err, errlen) != 0 ||
	    exec(st, "PRAGMA foreign_keys=ON", err, errlen) != 0 || migrate(st, err, errlen) != 0)
		goto fail;
	if (create)
		chmod(path, 0600);
	return st;
fail:
	store_free(st);
	return NULL;
}

void store_free(struct store *st)
{
	if (st == NULL)
		return;
	for (int i = 0; i < st->ncache; i++)
		sqlite3_finalize(st->cache[i].stmt);
	sqlite3_close_v2(st->db);
	free(st);
}

int store_schema_version(struct store *st)
{
	sqlite3_stmt *s = NULL;
	int v = 0;
	if (sqlite3_prepare_v2(st->db, "SELECT coalesce(max(version), 0) FROM schema_migrations", -1,
			       &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* ---- audit ---- */

/* The hash of one audit record: SHA-256 hex over prev_hash, seq, ts, kind,
 * device_id, request_id and detail joined by 0x1f (a byte none of them
 * contains in practice, so fields cannot be shifted into one another).
 * 0, or -1 when out of memory. */
static int audit_hash(const char *prev, long long seq, long long ts, const char *kind,
		      const char *dev, const char *rid, const char *detail, char out[65])
{
	size_t n = strlen(prev) + strlen(kind) + strlen(dev) + strlen(rid) + strlen(detail) + 64;
	char *buf = malloc(n);
	if (buf == NULL)
		return -1;
	int len = snprintf(buf, n, "%s\x1f%lld\x1f%lld\x1f%s\x1f%s\x1f%s\x1f%s", prev, seq, ts, kind,
			   dev, rid, detail);
	fg_sha256_hex(buf, (size_t)len, out);
	free(buf);
	return 0;
}

/* Append one audit record inside the caller's transaction. */
static int audit_in_tx(struct store *st, const char *kind, const char *dev, const char *rid,
		       const char *detail, int64_t now, char *err, size_t errlen)
{
	char prev[65] = "0000000000000000000000000000000000000000000000000000000000000000", hash[65];
	long long seq = 1;
	sqlite3_stmt *s = prep(st, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", err, errlen);
	if (s == NULL)
		return -1;
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		seq = sqlite3_column_int64(s, 0) + 1;
		col_text(s, 1, prev, sizeof prev);
	}
	release(st, s);
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		return dberr(st, err, errlen, "audit read");
	dev = dev ? dev : "";
	rid = rid ? rid : "";
	detail = detail ? detail : "";
	if (audit_hash(prev, seq, (long long)now, kind, dev, rid, detail, hash) != 0) {
		fg_seterr(err, errlen, "cannot write the %s audit record: out of memory", kind);
		return -1;
	}
	s = prep(st, "INSERT INTO audit (seq, ts, kind, device_id, request_id, detail, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
		 err, errlen);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, seq);
	sqlite3_bind_int64(s, 2, now);
	bind_text(s, 3, kind);
	bind_text(s, 4, dev);
	bind_text(s, 5, rid);
	bind_text(s, 6, detail);
	bind_text(s, 7, prev);
	bind_text(s, 8, hash);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : dberr(st, err, errlen, "audit insert");
	release(st, s);
	return rc;
}

/* Append an audit record whose detail is the JSON object json_pack builds
 * from fmt and the values (so names are escaped), inside the caller's
 * transaction. */
static int audit_json(struct store *st, const char *kind, const char *dev, const char *rid,
		      int64_t now, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	json_t *o;
	json_error_t je;
	char *detail = NULL;
	int rc = -1;

	va_start(ap, fmt);
	o = json_vpack_ex(&je, 0, fmt, ap);
	va_end(ap);
	if (o == NULL) {
		fg_seterr(err, errlen, "cannot build the %s audit record: %s", kind, je.text);
		goto out;
	}
	detail = json_dumps(o, JSON_COMPACT);
	if (detail == NULL) {
		fg_seterr(err, errlen, "cannot build the %s audit record: out of memory", kind);
		goto out;
	}
	rc = audit_in_tx(st, kind, dev, rid, detail, now, err, errlen);
out:
	free(detail);
	json_decref(o);
	return rc;
}

int store_audit(struct store *st, const char *kind, const char *device_id, const char *request_id,
		const char *detail, int64_t now, char *err, size_t errlen)
{
	if (begin(st, err, errlen) != 0)
		return -1;
	if (audit_in_tx(st, kind, device_id, request_id, detail, now, err, errlen) != 0) {
		rollback(st);
		return -1;
	}
	return commit(st, err, errlen);
}

int store_audit_verify(struct store *st, long *records, char *err, size_t errlen)
{
	char prev[65] = "0000000000000000000000000000000000000000000000000000000000000000";
	long long expect = 1;
	long n = 0;
	int rc = -1;
	sqlite3_stmt *s = prep(st, "SELECT seq, ts, kind, device_id, request_id, detail, prev_hash, hash FROM audit ORDER BY seq",
			       err, errlen);
	if (s == NULL)
		return -1;
	for (;;) {
		int r = sqlite3_step(s);
		if (r == SQLITE_DONE)
			break;
		if (r != SQLITE_ROW) {
			dberr(st, err, errlen, "audit read");
			goto out;
		}
		long long seq = sqlite3_column_int64(s, 0);
		const char *ph = col_str(s, 6), *h = col_str(s, 7);
		char calc[65];
		if (seq != expect) {
			fg_seterr(err, errlen, "audit record %lld is missing (sequence jumps from %lld to %lld)",
				  expect, expect - 1, seq);
			goto out;
		}
		if (strcmp(ph, prev) != 0) {
			fg_seterr(err, errlen, "chain broken at audit record %lld: prev_hash does not match record %lld",
				  seq, seq - 1);
			goto out;
		}
		if (audit_hash(ph, seq, sqlite3_column_int64(s, 1), col_str(s, 2), col_str(s, 3),
			       col_str(s, 4), col_str(s, 5), calc) != 0) {
			fg_seterr(err, errlen, "cannot check audit record %lld: out of memory", seq);
			goto out;
		}
		if (strcmp(calc, h) != 0) {
			fg_seterr(err, errlen, "audit record %lld was altered (its hash does not match its content)",
				  seq);
			goto out;
		}
		fg_strlcpy(prev, h, sizeof prev);
		expect++;
		n++;
	}
	rc = 0;
out:
	release(st, s);
	if (records)
		*records = n;
	return rc;
}

/* ---- devices ---- */

void store_device_clear(struct store_device *d)
{
	if (d == NULL)
		return;
	free(d->facts_json);
	memset(d, 0, sizeof *d);
}

#define DEVICE_COLS "id, curve_key, grp, hostname, state, created_at, last_seen, facts_json"

static void read_device(sqlite3_stmt *s, struct store_device *d)
{
	memset(d, 0, sizeof *d);
	col_text(s, 0, d->id, sizeof d->id);
	col_text(s, 1, d->curve_key, sizeof d->curve_key);
	col_text(s, 2, d->group, sizeof d->group);
	col_text(s, 3, d->hostname, sizeof d->hostname);
	d->state = sqlite3_column_int(s, 4);
	d->created_at = sqlite3_column_int64(s, 5);
	d->last_seen = sqlite3_column_int64(s, 6);
	d->facts_json = col_strdup(s, 7);
}

static int device_by(struct store *st, const char *sql, const char *v, struct store_device *out,
		     char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, sql, err, errlen);
	int rc = -1;
	if (s == NULL)
		return -1;
	bind_text(s, 1, v);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		read_device(s, out);
		rc = 1;
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		dberr(st, err, errlen, "device lookup");
	}
	release(st, s);
	return rc;
}

int store_device_by_key(struct store *st, const char *curve_key, struct store_device *out,
			char *err, size_t errlen)
{
	return device_by(st, "SELECT " DEVICE_COLS " FROM devices WHERE curve_key = ?", curve_key, out,
			 err, errlen);
}

int store_device_get(struct store *st, const char *id, struct store_device *out, char *err,
		     size_t errlen)
{
	return device_by(st, "SELECT " DEVICE_COLS " FROM devices WHERE id = ?", id, out, err, errlen);
}

int store_device_touch(struct store *st, const char *id, const char *hostname,
		       const char *facts_json, int64_t now, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "UPDATE devices SET last_seen = ?, hostname = ?, facts_json = coalesce(?, facts_json) WHERE id = ?",
			       err, errlen);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, now);
	bind_text(s, 2, hostname);
	if (facts_json)
		bind_text(s, 3, facts_json);
	else
		sqlite3_bind_null(s, 3);
	bind_text(s, 4, id);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : dberr(st, err, errlen, "device update");
	release(st, s);
	return rc;
}

int store_device_list(struct store *st, int (*cb)(void *arg, const struct store_device *d),
		      void *arg, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT " DEVICE_COLS " FROM devices ORDER BY created_at, id", err, errlen);
	int rc = 0, r;
	if (s == NULL)
		return -1;
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_device d;
		read_device(s, &d);
		int stop = cb(arg, &d);
		store_device_clear(&d);
		if (stop)
			break;
	}
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "device list");
	release(st, s);
	return rc;
}

struct revoked {
	char serial[41];
	char backend[64];
	unsigned char *der;
	size_t der_len;
};

/* Revoke a device's valid certificates and put it in state target
 * (revoked or retired), with audit records of kind. */
static int device_revoke_as(struct store *st, const char *id, int target, const char *kind,
			    int64_t now,
			    int (*cb)(void *arg, const char *serial_hex, const char *backend,
				      const unsigned char *der, size_t der_len),
			    void *arg, char *err, size_t errlen)
{
	struct revoked *list = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int rc = -1, r, state = -1;

	if (begin(st, err, errlen) != 0)
		return -1;
	s = prep(st, "SELECT state FROM devices WHERE id = ?", err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, id);
	r = sqlite3_step(s);
	if (r == SQLITE_ROW)
		state = sqlite3_column_int(s, 0);
	release(st, s);
	s = NULL;
	if (r == SQLITE_DONE) {
		fg_seterr(err, errlen, "no device %s; `fleetgate device list` shows the ids", id);
		goto fail;
	}
	if (r != SQLITE_ROW) {
		dberr(st, err, errlen, "device lookup");
		goto fail;
	}

	s = prep(st, "SELECT serial_hex, backend, der FROM certificates WHERE device_id = ? AND revoked = 0 ORDER BY not_before, serial_hex",
		 err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, id);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct revoked *nl = realloc(list, ncap * sizeof *list);
			if (nl == NULL) {
				fg_seterr(err, errlen, "cannot revoke device %s: out of memory", id);
				goto fail;
			}
			list = nl;
			cap = ncap;
		}
		col_text(s, 0, list[n].serial, sizeof list[n].serial);
		col_text(s, 1, list[n].backend, sizeof list[n].backend);
		list[n].der = col_blob(s, 2, &list[n].der_len);
		n++;
	}
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "certificate lookup");
		goto fail;
	}
	release(st, s);
	s = NULL;
	if (state == target && n == 0) {   /* nothing changes: no audit noise */
		rollback(st);
		rc = 0;
		goto out;
	}

	s = prep(st, "UPDATE certificates SET revoked = 1, revoked_at = ? WHERE device_id = ? AND revoked = 0",
		 err, errlen);
	if (s == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, now);
	bind_text(s, 2, id);
	r = step_done(st, s);
	s = NULL;
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "certificate revoke");
		goto fail;
	}
	s = prep(st, "UPDATE devices SET state = ? WHERE id = ?", err, errlen);
	if (s == NULL)
		goto fail;
	sqlite3_bind_int(s, 1, target);
	bind_text(s, 2, id);
	r = step_done(st, s);
	s = NULL;
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "device revoke");
		goto fail;
	}
	if (state != target &&
	    audit_json(st, kind, id, NULL, now, err, errlen, "{s:I}", "certificates",
		       (json_int_t)n) != 0)
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (audit_json(st, "cert.revoke", id, NULL, now, err, errlen, "{s:s, s:s}", "serial",
			       list[i].serial, "backend", list[i].backend) != 0)
			goto fail;
	if (commit(st, err, errlen) != 0)
		goto out;
	for (size_t i = 0; cb != NULL && i < n; i++)
		cb(arg, list[i].serial, list[i].backend, list[i].der, list[i].der_len);
	rc = (int)n;
	goto out;
fail:
	release(st, s);
	rollback(st);
out:
	for (size_t i = 0; i < n; i++)
		free(list[i].der);
	free(list);
	return rc;
}

/* ---- tokens ---- */

int store_token_add(struct store *st, const char *hash_hex, const char *group, int uses,
		    int64_t expires_at, int64_t now, char id_out[24], char *err, size_t errlen)
{
	if (fg_id_new("tok_", 8, id_out, 24) != 0) {
		fg_seterr(err, errlen, "cannot draw a token id");
		return -1;
	}
	sqlite3_stmt *s = prep(st, "INSERT INTO tokens (id, hash, grp, uses_left, expires_at, created_at) VALUES (?,?,?,?,?,?)",
			       err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, id_out);
	bind_text(s, 2, hash_hex);
	bind_text(s, 3, group);
	sqlite3_bind_int(s, 4, uses);
	sqlite3_bind_int64(s, 5, expires_at);
	sqlite3_bind_int64(s, 6, now);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : dberr(st, err, errlen, "token insert");
	release(st, s);
	return rc;
}

int store_token_lookup(struct store *st, const char *hash_hex, struct store_token *out, char *err,
		       size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT id, grp, uses_left, expires_at, created_at, revoked FROM tokens WHERE hash = ?",
			       err, errlen);
	int rc = -1;
	if (s == NULL)
		return -1;
	bind_text(s, 1, hash_hex);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		memset(out, 0, sizeof *out);
		col_text(s, 0, out->id, sizeof out->id);
		col_text(s, 1, out->group, sizeof out->group);
		out->uses_left = sqlite3_column_int(s, 2);
		out->expires_at = sqlite3_column_int64(s, 3);
		out->created_at = sqlite3_column_int64(s, 4);
		out->revoked = sqlite3_column_int(s, 5);
		rc = 1;
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		dberr(st, err, errlen, "token lookup");
	}
	release(st, s);
	return rc;
}

/* ---- jobs ---- */

void store_job_clear(struct store_job *j)
{
	if (j == NULL)
		return;
	free(j->params_json);
	free(j->reply);
	memset(j, 0, sizeof *j);
}

#define JOB_COLS "request_id, curve_key, device_id, kind, slot, backend, state, created_at, next_attempt, params_json, reply"

static void read_job(sqlite3_stmt *s, struct store_job *j)
{
	memset(j, 0, sizeof *j);
	col_text(s, 0, j->request_id, sizeof j->request_id);
	col_text(s, 1, j->curve_key, sizeof j->curve_key);
	col_text(s, 2, j->device_id, sizeof j->device_id);
	col_text(s, 3, j->kind, sizeof j->kind);
	col_text(s, 4, j->slot, sizeof j->slot);
	col_text(s, 5, j->backend, sizeof j->backend);
	j->state = sqlite3_column_int(s, 6);
	j->created_at = sqlite3_column_int64(s, 7);
	j->next_attempt = sqlite3_column_int64(s, 8);
	j->params_json = col_strdup(s, 9);
	j->reply = col_blob(s, 10, &j->reply_len);
}

int store_job_get(struct store *st, const char *curve_key, const char *request_id,
		  struct store_job *out, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT " JOB_COLS " FROM jobs WHERE curve_key = ? AND request_id = ?",
			       err, errlen);
	int rc = -1;
	if (s == NULL)
		return -1;
	bind_text(s, 1, curve_key);
	bind_text(s, 2, request_id);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		read_job(s, out);
		rc = 1;
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		dberr(st, err, errlen, "job lookup");
	}
	release(st, s);
	return rc;
}

/* The job row of an admission and its job.admit audit record, inside the
 * caller's transaction: 0, STORE_E_DUPLICATE, or -1 with err. */
static int job_insert(struct store *st, const struct store_admit *a, char *err, size_t errlen)
{
	sqlite3_stmt *s;
	int r;

	s = prep(st, "INSERT INTO jobs (curve_key, request_id, device_id, kind, slot, backend, state, created_at, updated_at, params_json) VALUES (?,?,?,?,?,?,?,?,?,?)",
		 err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, a->curve_key);
	bind_text(s, 2, a->request_id);
	bind_text(s, 3, a->device_id);
	bind_text(s, 4, a->kind);
	bind_text(s, 5, a->slot);
	bind_text(s, 6, a->backend);
	sqlite3_bind_int(s, 7, JOB_ADMITTED);
	sqlite3_bind_int64(s, 8, a->now);
	sqlite3_bind_int64(s, 9, a->now);
	bind_text(s, 10, a->params_json);
	r = step_done(st, s);
	if (r == SQLITE_CONSTRAINT_PRIMARYKEY) {
		fg_seterr(err, errlen, "request id %s from this key exists already; read that job instead",
			  nz(a->request_id));
		return STORE_E_DUPLICATE;
	}
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "job insert");
		return -1;
	}
	if (audit_json(st, "job.admit", a->device_id, a->request_id, a->now, err, errlen,
		       "{s:s, s:s, s:s}", "kind", nz(a->kind), "slot", nz(a->slot), "backend",
		       nz(a->backend)) != 0)
		return -1;
	return 0;
}

static int job_admit_body(struct store *st, void *arg, char *err, size_t errlen)
{
	const struct store_admit *a = arg;
	sqlite3_stmt *s;
	int r, rc = -1;

	if (a->token_hash != NULL) {
		char tid[24] = "";
		/* The guarded decrement is the whole race: of N writers queued on
		 * the write lock, only those that still see uses_left > 0 change
		 * a row. */
		s = prep(st, "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?",
			 err, errlen);
		if (s == NULL)
			goto fail;
		bind_text(s, 1, a->token_hash);
		sqlite3_bind_int64(s, 2, a->now);
		r = step_done(st, s);
		if (r != SQLITE_DONE) {
			dberr(st, err, errlen, "token use");
			goto fail;
		}
		if (sqlite3_changes(st->db) != 1) {
			fg_seterr(err, errlen, "the enrollment token is used up, expired, revoked or unknown; ask the operator for a new one");
			rc = STORE_E_TOKEN;
			goto fail;
		}
		s = prep(st, "SELECT id FROM tokens WHERE hash = ?", err, errlen);
		if (s == NULL)
			goto fail;
		bind_text(s, 1, a->token_hash);
		r = sqlite3_step(s);
		if (r == SQLITE_ROW)
			col_text(s, 0, tid, sizeof tid);
		release(st, s);
		if (r != SQLITE_ROW) {
			dberr(st, err, errlen, "token lookup");
			goto fail;
		}
		if (audit_json(st, "token.use", a->device_id, a->request_id, a->now, err, errlen,
			       "{s:s}", "token", tid) != 0)
			goto fail;
	}
	if (a->create_device) {
		s = prep(st, "INSERT INTO devices (id, curve_key, grp, hostname, state, created_at, last_seen, facts_json) VALUES (?,?,?,?,?,?,?,?)",
			 err, errlen);
		if (s == NULL)
			goto fail;
		bind_text(s, 1, a->device_id);
		bind_text(s, 2, a->curve_key);
		bind_text(s, 3, a->group);
		bind_text(s, 4, a->hostname);
		sqlite3_bind_int(s, 5, DEVICE_ACTIVE);
		sqlite3_bind_int64(s, 6, a->now);
		sqlite3_bind_int64(s, 7, a->now);
		if (a->facts_json)
			bind_text(s, 8, a->facts_json);
		else
			sqlite3_bind_null(s, 8);
		r = step_done(st, s);
		if (r == SQLITE_CONSTRAINT_UNIQUE) {   /* devices.curve_key */
			fg_seterr(err, errlen, "CURVE key %.40s is already bound to another device", nz(a->curve_key));
			rc = STORE_E_KEY_TAKEN;
			goto fail;
		}
		if (r == SQLITE_CONSTRAINT_PRIMARYKEY) {
			fg_seterr(err, errlen, "device id %s exists already; retry the request to draw a new one",
				  nz(a->device_id));
			goto fail;
		}
		if (r != SQLITE_DONE) {
			dberr(st, err, errlen, "device insert");
			goto fail;
		}
		if (audit_json(st, "device.create", a->device_id, a->request_id, a->now, err, errlen,
			       "{s:s, s:s}", "group", nz(a->group), "curve_key", nz(a->curve_key)) != 0)
			goto fail;
	}
	rc = job_insert(st, a, err, errlen);
	if (rc != 0)
		goto fail;
	return 0;
fail:
	return rc;
}

int store_job_admit(struct store *st, const struct store_admit *a, char *err, size_t errlen)
{
	return write_tx(st, job_admit_body, (void *)a, err, errlen);
}

void store_cert_clear(struct store_cert *c)
{
	if (c == NULL)
		return;
	free(c->der);
	memset(c, 0, sizeof *c);
}

struct finish_args {
	const char *curve_key, *request_id;
	int state;
	const unsigned char *reply;
	size_t reply_len;
	const struct store_cert *cert;
	const char *audit_kind, *audit_detail;
	/* store_job_finish_cert: the window and the reply built with it */
	const struct store_renewal_rule *rule;
	store_reply_fn build;
	void *build_arg;
	unsigned char *built;
	size_t built_len;
	struct store_window win;
};

/* ---- renewal windows ---- */

#define HOUR 3600
#define WINDOW_MAX_HOURS 20000    /* a range longer than this is cut (~2.3 years) */

/* splitmix64: the tie-break between equally loaded hours, seeded by the
 * serial so that the same certificate always gets the same hour */
static uint64_t mix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t seed_of(const char *s)
{
	uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* The scheduled load of hours [h0, h0 + n) into load[]. 0 or -1. */
static int load_hours(struct store *st, int64_t h0, long n, long *load, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT hour, n FROM renewal_hours WHERE hour >= ? AND hour < ? AND n > 0",
			       err, errlen);
	int r;
	memset(load, 0, (size_t)n * sizeof *load);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, h0);
	sqlite3_bind_int64(s, 2, h0 + n);
	while ((r = sqlite3_step(s)) == SQLITE_ROW)
		load[sqlite3_column_int64(s, 0) - h0] = (long)sqlite3_column_int64(s, 1);
	release(st, s);
	return r == SQLITE_DONE ? 0 : dberr(st, err, errlen, "renewal load");
}

/* Among hours [0, n) of load, one of the least loaded (index), ties broken
 * by rng; *min its load. */
static long least_loaded(const long *load, long n, uint64_t *rng, long *min)
{
	long best = -1, ties = 0;
	for (long i = 0; i < n; i++) {
		if (best < 0 || load[i] < load[best]) {
			best = i;
			ties = 1;
		} else if (load[i] == load[best] && mix64(rng) % (uint64_t)++ties == 0) {
			best = i;     /* reservoir sampling: each tie equally likely */
		}
	}
	*min = best >= 0 ? load[best] : 0;
	return best;
}

/* The window of a certificate [nb, na] under rule: *w (start 0 when the
 * life is too short for one) and *bucket (-1 when none). 0 or -1. */
static int assign_window(struct store *st, const struct store_renewal_rule *rule, int64_t nb,
			 int64_t na, const char *serial, struct store_window *w, int64_t *bucket,
			 char *err, size_t errlen)
{
	int64_t life = na - nb;
	memset(w, 0, sizeof *w);
	*bucket = -1;
	if (life <= 0)
		return 0;
	int64_t margin = life / 10 < HOUR ? life / 10 : HOUR;
	int64_t a = nb + (int64_t)((double)life * rule->from);
	int64_t b = nb + (int64_t)((double)life * rule->to);
	if (b > na - margin)
		b = na - margin;
	if (a < nb)
		a = nb;
	if (a >= b)
		return 0;
	int64_t h0 = a / HOUR, h1 = (b - 1) / HOUR;
	long n = (long)(h1 - h0 + 1);
	if (n > WINDOW_MAX_HOURS)
		n = WINDOW_MAX_HOURS;
	/* the earlier range a full one spills into, before the ceiling breaks */
	int64_t e = nb + (int64_t)((double)life * rule->earliest);
	int64_t e0 = rule->max_per_hour > 0 && e < a ? (e < nb ? nb : e) / HOUR : h0;
	long ne = (long)(h0 - e0);
	if (ne > WINDOW_MAX_HOURS)
		ne = WINDOW_MAX_HOURS, e0 = h0 - ne;
	long *load = malloc((size_t)(n + ne) * sizeof *load);
	uint64_t rng = seed_of(serial);
	long min, pick;
	int64_t hour;
	if (load == NULL) {
		fg_seterr(err, errlen, "out of memory choosing a renewal window");
		return -1;
	}
	if (load_hours(st, h0, n, load, err, errlen) != 0)
		goto fail;
	pick = least_loaded(load, n, &rng, &min);
	hour = h0 + pick;
	if (rule->max_per_hour > 0 && min >= rule->max_per_hour) {
		long emin = 0, epick = -1;
		if (ne > 0) {
			if (load_hours(st, e0, ne, load + n, err, errlen) != 0)
				goto fail;
			epick = least_loaded(load + n, ne, &rng, &emin);
		}
		if (epick >= 0 && emin < rule->max_per_hour)
			hour = e0 + epick;
		else
			w->over = 1;
	}
	free(load);
	int64_t lo = hour < h0 ? (e < nb ? nb : e) : a;   /* the spill range starts at e */
	w->start = hour * HOUR > lo ? hour * HOUR : lo;
	w->end = hour * HOUR + HOUR < b ? hour * HOUR + HOUR : b;
	if (w->end <= w->start)
		w->end = w->start + 1;
	*bucket = hour;
	return 0;
fail:
	free(load);
	return -1;
}

static int job_finish_body(struct store *st, void *arg, char *err, size_t errlen)
{
	struct finish_args *fa = arg;
	const char *curve_key = fa->curve_key, *request_id = fa->request_id;
	const unsigned char *reply = fa->reply;
	const struct store_cert *cert = fa->cert;
	const char *audit_kind = fa->audit_kind, *audit_detail = fa->audit_detail;
	size_t reply_len = fa->reply_len;
	int state = fa->state;
	sqlite3_stmt *s;
	int64_t now = fg_now();
	char dev[40] = "";

	if (cert != NULL) {
		/* A certificate of this request recorded already (a finish retried
		 * after a crash) is fine; the same serial for anything else is an
		 * error, never silently skipped. */
		s = prep(st, "SELECT request_id, renew_start, renew_end FROM certificates WHERE backend = ? AND serial_hex = ?",
			 err, errlen);
		if (s == NULL)
			goto fail;
		bind_text(s, 1, cert->backend);
		bind_text(s, 2, cert->serial_hex);
		int r = sqlite3_step(s);
		char have[65] = "";
		memset(&fa->win, 0, sizeof fa->win);
		if (r == SQLITE_ROW) {
			col_text(s, 0, have, sizeof have);
			fa->win.start = sqlite3_column_int64(s, 1);
			fa->win.end = sqlite3_column_int64(s, 2);
		}
		release(st, s);
		if (r != SQLITE_ROW && r != SQLITE_DONE) {
			dberr(st, err, errlen, "certificate lookup");
			goto fail;
		}
		if (r == SQLITE_ROW && strcmp(have, cert->request_id) != 0) {
			fg_seterr(err, errlen, "serial %s of backend %s is already recorded for request %s; refusing a duplicate serial",
				  cert->serial_hex, cert->backend, have);
			goto fail;
		}
		if (r == SQLITE_DONE) {
			int64_t bucket = -1;
			if (fa->rule != NULL &&
			    assign_window(st, fa->rule, cert->not_before, cert->not_after, cert->serial_hex,
					  &fa->win, &bucket, err, errlen) != 0)
				goto fail;
			/* the certificate it replaces leaves the renewal schedule */
			s = prep(st, "UPDATE certificates SET current = 0 WHERE device_id = ? AND slot = ? AND current = 1",
				 err, errlen);
			if (s == NULL)
				goto fail;
			bind_text(s, 1, cert->device_id);
			bind_text(s, 2, cert->slot);
			if (step_done(st, s) != SQLITE_DONE) {
				dberr(st, err, errlen, "certificate update");
				goto fail;
			}
			s = prep(st, "INSERT INTO certificates (serial_hex, backend, device_id, slot, request_id, subject, not_before, not_after, der, renew_start, renew_end, renew_bucket) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
				 err, errlen);
			if (s == NULL)
				goto fail;
			bind_text(s, 1, cert->serial_hex);
			bind_text(s, 2, cert->backend);
			bind_text(s, 3, cert->device_id);
			bind_text(s, 4, cert->slot);
			bind_text(s, 5, cert->request_id);
			bind_text(s, 6, cert->subject);
			sqlite3_bind_int64(s, 7, cert->not_before);
			sqlite3_bind_int64(s, 8, cert->not_after);
			sqlite3_bind_blob64(s, 9, cert->der, cert->der_len, SQLITE_TRANSIENT);
			sqlite3_bind_int64(s, 10, fa->win.start);
			sqlite3_bind_int64(s, 11, fa->win.end);
			if (bucket >= 0)
				sqlite3_bind_int64(s, 12, bucket);
			else
				sqlite3_bind_null(s, 12);
			if (step_done(st, s) != SQLITE_DONE) {
				dberr(st, err, errlen, "certificate insert");
				goto fail;
			}
		}
		fg_strlcpy(dev, cert->device_id, sizeof dev);
	}
	if (fa->build != NULL) {
		free(fa->built);
		fa->built = NULL;
		if (fa->build(fa->build_arg, &fa->win, &fa->built, &fa->built_len) != 0 || fa->built == NULL) {
			fg_seterr(err, errlen, "cannot build the reply of job %s (out of memory?)", nz(request_id));
			goto fail;
		}
		reply = fa->built;
		reply_len = fa->built_len;
	}
	s = prep(st, "UPDATE jobs SET state = ?, reply = ?, updated_at = ? WHERE curve_key = ? AND request_id = ?",
		 err, errlen);
	if (s == NULL)
		goto fail;
	sqlite3_bind_int(s, 1, state);
	sqlite3_bind_blob64(s, 2, reply, reply_len, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 3, now);
	bind_text(s, 4, curve_key);
	bind_text(s, 5, request_id);
	if (step_done(st, s) != SQLITE_DONE) {
		dberr(st, err, errlen, "job update");
		goto fail;
	}
	if (sqlite3_changes(st->db) != 1) {
		fg_seterr(err, errlen, "no job %s from this key to finish; it was never admitted",
			  nz(request_id));
		goto fail;
	}
	if (dev[0] == '\0' && audit_kind != NULL) {   /* no certificate: name the job's device */
		s = prep(st, "SELECT device_id FROM jobs WHERE curve_key = ? AND request_id = ?", err, errlen);
		if (s == NULL)
			goto fail;
		bind_text(s, 1, curve_key);
		bind_text(s, 2, request_id);
		int r = sqlite3_step(s);
		if (r == SQLITE_ROW)
			col_text(s, 0, dev, sizeof dev);
		release(st, s);
		if (r != SQLITE_ROW) {
			dberr(st, err, errlen, "job lookup");
			goto fail;
		}
	}
	if (audit_kind != NULL &&
	    audit_in_tx(st, audit_kind, dev, request_id, audit_detail, now, err, errlen) != 0)
		goto fail;
	return 0;
fail:
	return -1;
}

int store_job_finish(struct store *st, const char *curve_key, const char *request_id,
		     int state, const unsigned char *reply, size_t reply_len,
		     const struct store_cert *cert, const char *audit_kind,
		     const char *audit_detail, char *err, size_t errlen)
{
	struct finish_args fa = { .curve_key = curve_key, .request_id = request_id, .state = state,
				  .reply = reply, .reply_len = reply_len, .cert = cert,
				  .audit_kind = audit_kind, .audit_detail = audit_detail };

	if (state != JOB_DONE && state != JOB_FAILED) {
		fg_seterr(err, errlen, "cannot finish job %s in state %d: only done or failed is final",
			  nz(request_id), state);
		return -1;
	}
	return write_tx(st, job_finish_body, &fa, err, errlen);
}

int store_job_finish_cert(struct store *st, const char *curve_key, const char *request_id,
			  const struct store_cert *cert, const struct store_renewal_rule *rule,
			  store_reply_fn build, void *build_arg, unsigned char **reply,
			  size_t *reply_len, struct store_window *win, const char *audit_kind,
			  const char *audit_detail, char *err, size_t errlen)
{
	struct finish_args fa = { .curve_key = curve_key, .request_id = request_id,
				  .state = JOB_DONE, .cert = cert, .audit_kind = audit_kind,
				  .audit_detail = audit_detail, .rule = rule, .build = build,
				  .build_arg = build_arg };
	*reply = NULL;
	*reply_len = 0;
	int rc = write_tx(st, job_finish_body, &fa, err, errlen);
	if (rc != 0) {
		free(fa.built);
		return rc;
	}
	*reply = fa.built;
	*reply_len = fa.built_len;
	if (win != NULL)
		*win = fa.win;
	return 0;
}

int store_cert_window(struct store *st, const char *device_id, const char *serial_hex,
		      int64_t *start, int64_t *end, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT renew_start, renew_end FROM certificates WHERE serial_hex = ? AND device_id = ? ORDER BY current DESC LIMIT 1",
			       err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, serial_hex);
	bind_text(s, 2, device_id);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		*start = sqlite3_column_int64(s, 0);
		*end = sqlite3_column_int64(s, 1);
	}
	release(st, s);
	if (r == SQLITE_ROW)
		return 1;
	return r == SQLITE_DONE ? 0 : dberr(st, err, errlen, "certificate window lookup");
}

struct pull_args {
	const char *group, *slot;
	int64_t from, to;
	long moved;
};

static int pull_in_body(struct store *st, void *arg, char *err, size_t errlen)
{
	struct pull_args *pa = arg;
	int64_t now = fg_now();
	int64_t h0 = pa->from / HOUR, h1 = (pa->to - 1) / HOUR;
	long n = (long)(h1 - h0 + 1);
	long *load = NULL;
	sqlite3_stmt *s = NULL, *u = NULL;
	int r, rc = -1;

	pa->moved = 0;
	if (n <= 0 || n > WINDOW_MAX_HOURS) {
		fg_seterr(err, errlen, "a renewal range of %ld hours cannot be planned; give one between an hour and %d hours",
			  n, WINDOW_MAX_HOURS);
		return -1;
	}
	if ((load = malloc((size_t)n * sizeof *load)) == NULL) {
		fg_seterr(err, errlen, "out of memory planning renewals");
		return -1;
	}
	if (load_hours(st, h0, n, load, err, errlen) != 0)
		goto out;
	/* its own statement (not the cache): the updates below run while it reads */
	if (sqlite3_prepare_v2(st->db,
			       "SELECT c.rowid, c.serial_hex, c.not_after, c.renew_start, c.renew_end FROM certificates c"
			       " JOIN devices d ON d.id = c.device_id"
			       " WHERE c.current = 1 AND c.revoked = 0 AND c.not_after > ?1 AND d.state = 0"
			       " AND (?2 IS NULL OR d.grp = ?2) AND (?3 IS NULL OR c.slot = ?3)"
			       " ORDER BY c.serial_hex",
			       -1, &s, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(st->db,
			       "UPDATE certificates SET renew_start = ?, renew_end = ?, renew_bucket = ? WHERE rowid = ?",
			       -1, &u, NULL) != SQLITE_OK) {
		dberr(st, err, errlen, "renewal pull-in");
		goto out;
	}
	sqlite3_bind_int64(s, 1, now);
	if (pa->group)
		sqlite3_bind_text(s, 2, pa->group, -1, SQLITE_STATIC);
	if (pa->slot)
		sqlite3_bind_text(s, 3, pa->slot, -1, SQLITE_STATIC);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		const char *serial = (const char *)sqlite3_column_text(s, 1);
		int64_t na = sqlite3_column_int64(s, 2), rs = sqlite3_column_int64(s, 3),
			re = sqlite3_column_int64(s, 4);
		if (rs >= pa->from && re > rs && re <= pa->to)
			continue;         /* renewing in the range already */
		uint64_t rng = seed_of(serial ? serial : "");
		long min, pick = least_loaded(load, n, &rng, &min);
		int64_t hour = h0 + pick;
		int64_t ws = hour * HOUR > pa->from ? hour * HOUR : pa->from;
		int64_t we = hour * HOUR + HOUR < pa->to ? hour * HOUR + HOUR : pa->to;
		if (we > na)
			we = na;
		if (ws >= we)
			ws = pa->from;
		load[pick]++;
		sqlite3_reset(u);
		sqlite3_bind_int64(u, 1, ws);
		sqlite3_bind_int64(u, 2, we);
		sqlite3_bind_int64(u, 3, hour);
		sqlite3_bind_int64(u, 4, sqlite3_column_int64(s, 0));
		if (sqlite3_step(u) != SQLITE_DONE) {
			dberr(st, err, errlen, "renewal window update");
			goto out;
		}
		pa->moved++;
	}
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "renewal pull-in");
		goto out;
	}
	char detail[512], fs[32], ts[32];
	json_t *j = json_pack("{s:s?, s:s?, s:s, s:s, s:I}", "group", pa->group, "slot", pa->slot,
			      "from", fg_time_iso(pa->from, fs, sizeof fs), "to",
			      fg_time_iso(pa->to, ts, sizeof ts), "certificates", (json_int_t)pa->moved);
	char *d = j ? json_dumps(j, JSON_COMPACT) : NULL;
	fg_strlcpy(detail, d ? d : "{}", sizeof detail);
	free(d);
	json_decref(j);
	rc = audit_in_tx(st, "renewal.pull_in", "", "", detail, now, err, errlen);
out:
	sqlite3_finalize(s);
	sqlite3_finalize(u);
	free(load);
	return rc;
}

int store_renewal_pull_in(struct store *st, const char *group, const char *slot, int64_t from,
			  int64_t to, long *moved, char *err, size_t errlen)
{
	struct pull_args pa = { group, slot, from, to, 0 };
	if (to <= from) {
		fg_seterr(err, errlen, "the renewal range ends before it starts");
		return -1;
	}
	int rc = write_tx(st, pull_in_body, &pa, err, errlen);
	*moved = rc == 0 ? pa.moved : 0;
	return rc;
}

int store_renewal_load(struct store *st, int64_t from, long hours,
		       int (*cb)(void *arg, int64_t hour, double renewals, long expiring),
		       void *arg, char *err, size_t errlen)
{
	int64_t h0 = from / HOUR;
	int64_t end = (h0 + hours) * HOUR;
	double *ren = NULL;       /* difference array of renewal rates, then the load */
	long *exp = NULL;
	sqlite3_stmt *s = NULL;
	int r, rc = -1;

	if (hours <= 0 || hours > 24L * 3660) {
		fg_seterr(err, errlen, "cannot plan %ld hours; give between 1 and %ld", hours, 24L * 3660);
		return -1;
	}
	ren = calloc((size_t)hours + 1, sizeof *ren);
	exp = calloc((size_t)hours, sizeof *exp);
	if (ren == NULL || exp == NULL) {
		fg_seterr(err, errlen, "out of memory planning renewals");
		goto out;
	}
	/* one statement: one consistent read */
	s = prep(st, "SELECT not_after, not_before, renew_start, renew_end FROM certificates"
		     " WHERE current = 1 AND revoked = 0 AND not_after > ?", err, errlen);
	if (s == NULL)
		goto out;
	sqlite3_bind_int64(s, 1, h0 * HOUR);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t na = sqlite3_column_int64(s, 0), nb = sqlite3_column_int64(s, 1);
		int64_t ws = sqlite3_column_int64(s, 2), we = sqlite3_column_int64(s, 3);
		if (na < end)
			exp[na / HOUR - h0]++;
		if (ws <= 0 || we <= ws) {
			/* no window: the agent's default, renew_at 2/3 of the
			 * life less its jitter of up to 5% of it (agents/slot.c) */
			we = nb + (na - nb) * 2 / 3;
			ws = we - (na - nb) / 20;
			if (ws >= we)
				ws = we - 1;
		}
		if (we <= h0 * HOUR || ws >= end)
			continue;
		/* one renewal spread over [ws, we): rate per hour in each hour it covers */
		int64_t a = ws / HOUR - h0, b = (we - 1) / HOUR - h0;
		double rate = 1.0 / (double)(b - a + 1);
		if (a < 0)
			a = 0;
		if (b >= hours)
			b = hours - 1;
		ren[a] += rate;
		ren[b + 1] -= rate;
	}
	if (r != SQLITE_DONE)
		dberr(st, err, errlen, "renewal plan");
	release(st, s);
	if (r != SQLITE_DONE) {
		goto out;
	}
	double run = 0;
	rc = 0;
	for (long i = 0; i < hours; i++) {
		run += ren[i];
		if (cb(arg, (h0 + i) * HOUR, run < 1e-9 ? 0 : run, exp[i]))
			break;
	}
out:
	free(ren);
	free(exp);
	return rc;
}

int store_job_set_pending(struct store *st, const char *curve_key, const char *request_id,
			  int64_t next_attempt, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "UPDATE jobs SET state = ?, next_attempt = ?, updated_at = ? WHERE curve_key = ? AND request_id = ?",
			       err, errlen);
	if (s == NULL)
		return -1;
	sqlite3_bind_int(s, 1, JOB_PENDING);
	sqlite3_bind_int64(s, 2, next_attempt);
	sqlite3_bind_int64(s, 3, fg_now());
	bind_text(s, 4, curve_key);
	bind_text(s, 5, request_id);
	if (step_done(st, s) != SQLITE_DONE)
		return dberr(st, err, errlen, "job update");
	if (sqlite3_changes(st->db) != 1) {
		fg_seterr(err, errlen, "no job %s from this key to mark pending; it was never admitted",
			  nz(request_id));
		return -1;
	}
	return 0;
}

int store_job_list_open(struct store *st, int (*cb)(void *arg, const struct store_job *j),
			void *arg, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT " JOB_COLS " FROM jobs WHERE state < 2 ORDER BY created_at", err, errlen);
	int r, rc = 0;
	if (s == NULL)
		return -1;
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_job j;
		read_job(s, &j);
		int stop = cb(arg, &j);
		store_job_clear(&j);
		if (stop)
			break;
	}
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "job list");
	release(st, s);
	return rc;
}

/* ---- plugin and job state ---- */

static int blob_get(struct store *st, const char *sql, const char *a, const char *b,
		    const char *c, unsigned char **val, size_t *len, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, sql, err, errlen);
	int rc = -1;
	*val = NULL;
	*len = 0;
	if (s == NULL)
		return -1;
	bind_text(s, 1, a);
	bind_text(s, 2, b);
	if (c)
		bind_text(s, 3, c);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		int n = sqlite3_column_bytes(s, 0);
		*val = malloc(n > 0 ? (size_t)n : 1);
		if (*val != NULL) {
			if (n > 0)
				memcpy(*val, sqlite3_column_blob(s, 0), (size_t)n);
			*len = (size_t)n;
			rc = 1;
		} else {
			fg_seterr(err, errlen, "out of memory");
		}
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		dberr(st, err, errlen, "state read");
	}
	release(st, s);
	return rc;
}

static int blob_put(struct store *st, const char *sql, const char *a, const char *b,
		    const char *c, const unsigned char *val, size_t len, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, sql, err, errlen);
	if (s == NULL)
		return -1;
	int i = 1;
	bind_text(s, i++, a);
	bind_text(s, i++, b);
	if (c)
		bind_text(s, i++, c);
	sqlite3_bind_blob64(s, i, val, len, SQLITE_TRANSIENT);
	return step_done(st, s) == SQLITE_DONE ? 0 : dberr(st, err, errlen, "state write");
}

int store_job_state_get(struct store *st, const char *curve_key, const char *request_id,
			const char *key, unsigned char **val, size_t *len, char *err, size_t errlen)
{
	return blob_get(st, "SELECT value FROM job_state WHERE curve_key = ? AND request_id = ? AND key = ?",
			curve_key, request_id, key, val, len, err, errlen);
}

struct state_put_args {
	const char *curve_key, *request_id, *key;
	const unsigned char *val;
	size_t len;
};

static int job_state_put_body(struct store *st, void *arg, char *err, size_t errlen)
{
	const struct state_put_args *pa = arg;
	return blob_put(st, "INSERT OR REPLACE INTO job_state (curve_key, request_id, key, value) VALUES (?,?,?,?)",
			pa->curve_key, pa->request_id, pa->key, pa->val, pa->len, err, errlen);
}

int store_job_state_put(struct store *st, const char *curve_key, const char *request_id,
			const char *key, const unsigned char *val, size_t len, char *err, size_t errlen)
{
	struct state_put_args pa = { curve_key, request_id, key, val, len };
	return write_tx(st, job_state_put_body, &pa, err, errlen);
}

int store_plugin_state_get(struct store *st, const char *backend, const char *key,
			   unsigned char **val, size_t *len, char *err, size_t errlen)
{
	return blob_get(st, "SELECT value FROM plugin_state WHERE backend = ? AND key = ?", backend, key,
			NULL, val, len, err, errlen);
}

int store_plugin_state_put(struct store *st, const char *backend, const char *key,
			   const unsigned char *val, size_t len, char *err, size_t errlen)
{
	return blob_put(st, "INSERT OR REPLACE INTO plugin_state (backend, key, value) VALUES (?,?,?)",
			backend, key, NULL, val, len, err, errlen);
}

/* One transaction (BEGIN IMMEDIATE), so two processes sharing the store
 * never draw the same value. A stored value that is not a decimal number
 * is refused, not reset. */
int store_plugin_state_incr(struct store *st, const char *backend, const char *key, uint64_t *out,
			    char *err, size_t errlen)
{
	unsigned char *v = NULL;
	size_t len = 0;
	uint64_t n = 0;
	char buf[32];

	if (begin(st, err, errlen) < 0)
		return -1;
	int r = store_plugin_state_get(st, backend, key, &v, &len, err, errlen);
	if (r < 0)
		goto fail;
	if (r == 1) {
		int ok = len > 0 && len < 21;
		for (size_t i = 0; ok && i < len; i++)
			ok = v[i] >= '0' && v[i] <= '9';
		for (size_t i = 0; ok && i < len; i++) {
			if (n > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
				ok = 0;
			else
				n = n * 10 + (uint64_t)(v[i] - '0');
		}
		if (!ok || n == UINT64_MAX) {
			fg_seterr(err, errlen,
				  "store %s: plugin state '%s' of backend %s is not a decimal counter; the store is damaged",
				  st->path, key, backend);
			goto fail;
		}
	}
	n++;
	snprintf(buf, sizeof buf, "%llu", (unsigned long long)n);
	if (store_plugin_state_put(st, backend, key, (const unsigned char *)buf, strlen(buf), err, errlen) < 0)
		goto fail;
	if (commit(st, err, errlen) < 0) {
		free(v);
		return -1;
	}
	free(v);
	*out = n;
	return 0;
fail:
	free(v);
	rollback(st);
	return -1;
}

struct reserve_args {
	const char *backend, *serial_hex;
	int64_t now;
};

static int serial_reserve_body(struct store *st, void *arg, char *err, size_t errlen)
{
	const struct reserve_args *ra = arg;
	const char *backend = ra->backend, *serial_hex = ra->serial_hex;
	int64_t now = ra->now;
	sqlite3_stmt *s = prep(st, "INSERT INTO serials (backend, serial_hex, reserved_at) VALUES (?,?,?)",
			       err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, backend);
	bind_text(s, 2, serial_hex);
	sqlite3_bind_int64(s, 3, now);
	int r = step_done(st, s);
	if (r == SQLITE_DONE)
		return 0;
	if (r == SQLITE_CONSTRAINT_PRIMARYKEY)
		return 1;
	return dberr(st, err, errlen, "serial reservation");
}

int store_serial_reserve(struct store *st, const char *backend, const char *serial_hex,
			 int64_t now, char *err, size_t errlen)
{
	struct reserve_args ra = { backend, serial_hex, now };
	return write_tx(st, serial_reserve_body, &ra, err, errlen);
}

int store_serial_reserved(struct store *st, const char *backend, const char *serial_hex, char *err,
			  size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT 1 FROM serials WHERE backend = ? AND serial_hex = ?", err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, backend);
	bind_text(s, 2, serial_hex);
	int r = sqlite3_step(s), rc = r == SQLITE_ROW ? 1 : 0;
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "serial lookup");
	release(st, s);
	return rc;
}

/* ---- certificates ---- */

#define CERT_COLS "serial_hex, device_id, slot, backend, request_id, subject, not_before, not_after, revoked, revoked_at, der, renew_start, renew_end"

static void read_cert(sqlite3_stmt *s, struct store_cert *c)
{
	memset(c, 0, sizeof *c);
	col_text(s, 0, c->serial_hex, sizeof c->serial_hex);
	col_text(s, 1, c->device_id, sizeof c->device_id);
	col_text(s, 2, c->slot, sizeof c->slot);
	col_text(s, 3, c->backend, sizeof c->backend);
	col_text(s, 4, c->request_id, sizeof c->request_id);
	col_text(s, 5, c->subject, sizeof c->subject);
	c->not_before = sqlite3_column_int64(s, 6);
	c->not_after = sqlite3_column_int64(s, 7);
	c->revoked = sqlite3_column_int(s, 8);
	c->revoked_at = sqlite3_column_int64(s, 9);
	c->der = col_blob(s, 10, &c->der_len);
	c->renew_start = sqlite3_column_int64(s, 11);
	c->renew_end = sqlite3_column_int64(s, 12);
}

int store_cert_get(struct store *st, const char *serial_hex, struct store_cert *out, char *err,
		   size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT " CERT_COLS " FROM certificates WHERE serial_hex = ? LIMIT 1",
			       err, errlen);
	int rc = -1;
	if (s == NULL)
		return -1;
	bind_text(s, 1, serial_hex);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		read_cert(s, out);
		rc = 1;
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		dberr(st, err, errlen, "certificate lookup");
	}
	release(st, s);
	return rc;
}

int store_cert_list(struct store *st, const char *device_id,
		    int (*cb)(void *arg, const struct store_cert *c), void *arg, char *err,
		    size_t errlen)
{
	sqlite3_stmt *s = prep(st, device_id
			       ? "SELECT " CERT_COLS " FROM certificates WHERE device_id = ? ORDER BY not_before, serial_hex"
			       : "SELECT " CERT_COLS " FROM certificates ORDER BY not_before, serial_hex",
			       err, errlen);
	int r, rc = 0;
	if (s == NULL)
		return -1;
	if (device_id)
		bind_text(s, 1, device_id);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_cert c;
		read_cert(s, &c);
		int stop = cb(arg, &c);
		store_cert_clear(&c);
		if (stop)
			break;
	}
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "certificate list");
	release(st, s);
	return rc;
}

int store_device_revoke(struct store *st, const char *id, int64_t now,
			int (*cb)(void *arg, const char *serial_hex, const char *backend,
				  const unsigned char *der, size_t der_len),
			void *arg, char *err, size_t errlen)
{
	return device_revoke_as(st, id, DEVICE_REVOKED, "device.revoke", now, cb, arg, err, errlen);
}

int store_device_retire(struct store *st, const char *id, int64_t now,
			int (*cb)(void *arg, const char *serial_hex, const char *backend,
				  const unsigned char *der, size_t der_len),
			void *arg, char *err, size_t errlen)
{
	return device_revoke_as(st, id, DEVICE_RETIRED, "device.retire", now, cb, arg, err, errlen);
}

/* ---- the command queue ---- */

static const char *const command_state_names[COMMAND_STATE_MAX] = { "queued", "delivered", "done",
	"failed" };

const char *store_command_state_name(int state)
{
	return state >= 0 && state < COMMAND_STATE_MAX ? command_state_names[state] : "unknown";
}

int store_command_add(struct store *st, const char *device_id, const char *kind, const char *slot,
		      int64_t now, char id_out[24], char *err, size_t errlen)
{
	char id[24];
	if (fg_id_new("cmd_", 8, id, sizeof id) != 0) {
		fg_seterr(err, errlen, "cannot draw a command id (no randomness)");
		return -1;
	}
	if (begin(st, err, errlen) != 0)
		return -1;
	sqlite3_stmt *s = prep(st, "SELECT state FROM devices WHERE id = ?", err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, device_id);
	int r = sqlite3_step(s), state = r == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
	release(st, s);
	if (r == SQLITE_DONE) {
		fg_seterr(err, errlen, "no device %s; `fleetgate device list` shows the ids", device_id);
		goto fail;
	}
	if (r != SQLITE_ROW) {
		dberr(st, err, errlen, "device lookup");
		goto fail;
	}
	if (state != DEVICE_ACTIVE && state != DEVICE_REGISTERED) {
		fg_seterr(err, errlen, "device %s is %s and takes no commands", device_id,
			  store_device_state_name(state));
		goto fail;
	}
	s = prep(st, "INSERT INTO commands (id, device_id, kind, slot, state, created_at) VALUES (?,?,?,?,0,?)",
		 err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, id);
	bind_text(s, 2, device_id);
	bind_text(s, 3, kind);
	bind_text(s, 4, slot ? slot : "");
	sqlite3_bind_int64(s, 5, now);
	r = step_done(st, s);
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "command insert");
		goto fail;
	}
	if (audit_json(st, "command.queue", device_id, NULL, now, err, errlen, "{s:s, s:s, s:s}", "id", id,
		       "kind", kind, "slot", slot ? slot : "") != 0)
		goto fail;
	if (commit(st, err, errlen) != 0)
		return -1;
	memcpy(id_out, id, sizeof id);
	return 0;
fail:
	rollback(st);
	return -1;
}

#define COMMAND_COLS "id, device_id, kind, slot, state, created_at, delivered_at, done_at, result"

static void read_command(sqlite3_stmt *s, struct store_command *c)
{
	memset(c, 0, sizeof *c);
	col_text(s, 0, c->id, sizeof c->id);
	col_text(s, 1, c->device_id, sizeof c->device_id);
	col_text(s, 2, c->kind, sizeof c->kind);
	col_text(s, 3, c->slot, sizeof c->slot);
	c->state = sqlite3_column_int(s, 4);
	c->created_at = sqlite3_column_int64(s, 5);
	c->delivered_at = sqlite3_column_int64(s, 6);
	c->done_at = sqlite3_column_int64(s, 7);
	col_text(s, 8, c->result, sizeof c->result);
}

int store_command_list(struct store *st, const char *device_id, int open_only,
		       int (*cb)(void *arg, const struct store_command *c), void *arg, char *err,
		       size_t errlen)
{
	sqlite3_stmt *s = prep(st, open_only
			       ? "SELECT " COMMAND_COLS " FROM commands WHERE device_id = ? AND state < 2 ORDER BY created_at, id"
			       : "SELECT " COMMAND_COLS " FROM commands WHERE device_id = ? ORDER BY created_at, id",
			       err, errlen);
	int r, rc = 0;
	if (s == NULL)
		return -1;
	bind_text(s, 1, device_id);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_command c;
		read_command(s, &c);
		if (cb(arg, &c))
			break;
	}
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "command list");
	release(st, s);
	return rc;
}

int store_command_delivered(struct store *st, const char *device_id, const char *id, int64_t now,
			    char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "UPDATE commands SET state = 1, delivered_at = ? WHERE id = ? AND device_id = ? AND state = 0",
			       err, errlen);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, now);
	bind_text(s, 2, id);
	bind_text(s, 3, device_id);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : dberr(st, err, errlen, "command update");
	release(st, s);
	return rc;
}

int store_command_result(struct store *st, const char *device_id, const char *id, int ok,
			 const char *message, int64_t now, char *err, size_t errlen)
{
	if (begin(st, err, errlen) != 0)
		return -1;
	sqlite3_stmt *s = prep(st, "UPDATE commands SET state = ?, done_at = ?, result = ? WHERE id = ? AND device_id = ? AND state < 2",
			       err, errlen);
	if (s == NULL)
		goto fail;
	sqlite3_bind_int(s, 1, ok ? COMMAND_DONE : COMMAND_FAILED);
	sqlite3_bind_int64(s, 2, now);
	bind_text(s, 3, message ? message : "");
	bind_text(s, 4, id);
	bind_text(s, 5, device_id);
	int r = step_done(st, s);
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "command update");
		goto fail;
	}
	if (sqlite3_changes(st->db) == 0) {   /* unknown, another device's, or already closed */
		rollback(st);
		return 0;
	}
	if (audit_json(st, ok ? "command.done" : "command.failed", device_id, NULL, now, err, errlen,
		       "{s:s, s:s}", "id", id, "result", message ? message : "") != 0)
		goto fail;
	return commit(st, err, errlen) != 0 ? -1 : 1;
fail:
	rollback(st);
	return -1;
}

/* ---- reading the audit log ---- */

int store_audit_list(struct store *st, const char *device_id, long long after_seq, long limit,
		     int newest, int (*cb)(void *arg, const struct store_audit_rec *a), void *arg,
		     char *err, size_t errlen)
{
	/* newest: the last `limit` records (still handed over oldest first) */
	sqlite3_stmt *s = prep(st, device_id
			       ? "SELECT seq, ts, kind, device_id, request_id, detail FROM (SELECT * FROM audit WHERE seq > ? AND device_id = ? ORDER BY CASE WHEN ? THEN -seq ELSE seq END LIMIT ?) ORDER BY seq"
			       : "SELECT seq, ts, kind, device_id, request_id, detail FROM (SELECT * FROM audit WHERE seq > ? AND ?2 IS NULL ORDER BY CASE WHEN ? THEN -seq ELSE seq END LIMIT ?) ORDER BY seq",
			       err, errlen);
	int r, rc = 0;
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, after_seq);
	if (device_id)
		bind_text(s, 2, device_id);
	else
		sqlite3_bind_null(s, 2);
	sqlite3_bind_int(s, 3, newest);
	sqlite3_bind_int64(s, 4, limit > 0 ? limit : -1);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_audit_rec a;
		memset(&a, 0, sizeof a);
		a.seq = sqlite3_column_int64(s, 0);
		a.ts = sqlite3_column_int64(s, 1);
		col_text(s, 2, a.kind, sizeof a.kind);
		col_text(s, 3, a.device_id, sizeof a.device_id);
		col_text(s, 4, a.request_id, sizeof a.request_id);
		a.detail = (const char *)sqlite3_column_text(s, 5);
		if (cb(arg, &a))
			break;
	}
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "audit list");
	release(st, s);
	return rc;
}

/* ---- the fleet at a glance ---- */

const int64_t store_expiry_bounds[STORE_EXPIRY_BUCKETS] = {
	86400, 7 * 86400, 30 * 86400, 90 * 86400,
};

int store_ping(struct store *st, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT count(*) FROM schema_migrations", err, errlen);
	if (s == NULL)
		return -1;
	int r = sqlite3_step(s);
	release(st, s);
	if (r != SQLITE_ROW)
		return dberr(st, err, errlen, "health query");
	return 0;
}

/* Run one grouped count query (two columns: key, count) into cb. */
static int count_rows(struct store *st, sqlite3_stmt *s, const char *what,
		      void (*cb)(void *arg, sqlite3_stmt *row), void *arg, char *err, size_t errlen)
{
	int r;
	while ((r = sqlite3_step(s)) == SQLITE_ROW)
		cb(arg, s);
	release(st, s);
	return r == SQLITE_DONE ? 0 : dberr(st, err, errlen, what);
}

static void sum_devices(void *arg, sqlite3_stmt *row)
{
	struct store_summary *o = arg;
	int state = sqlite3_column_int(row, 0);
	if (state >= 0 && state < DEVICE_STATE_MAX)
		o->devices[state] = (long)sqlite3_column_int64(row, 1);
}

static void sum_jobs(void *arg, sqlite3_stmt *row)
{
	struct store_summary *o = arg;
	int state = sqlite3_column_int(row, 0);
	if (state == JOB_ADMITTED)
		o->jobs_admitted = (long)sqlite3_column_int64(row, 1);
	else if (state == JOB_PENDING)
		o->jobs_pending = (long)sqlite3_column_int64(row, 1);
}

/* See store.h. A deferred read transaction makes the counts one snapshot. */
int store_fleet_summary(struct store *st, int64_t now, struct store_summary *out, char *err,
			size_t errlen)
{
	sqlite3_stmt *s;
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (exec(st, "BEGIN", err, errlen) != 0)
		return -1;
	s = prep(st, "SELECT state, count(*) FROM devices GROUP BY state", err, errlen);
	if (s == NULL || count_rows(st, s, "device count", sum_devices, out, err, errlen) != 0)
		goto out;
	s = prep(st, "SELECT state, count(*) FROM jobs WHERE state < 2 GROUP BY state", err, errlen);
	if (s == NULL || count_rows(st, s, "job count", sum_jobs, out, err, errlen) != 0)
		goto out;
	s = prep(st, "SELECT"
		 " coalesce(sum(revoked = 0 AND not_after > ?1), 0),"
		 " coalesce(sum(revoked <> 0), 0),"
		 " coalesce(sum(revoked = 0 AND not_after <= ?1), 0),"
		 " coalesce(sum(revoked = 0 AND not_after > ?1 AND not_after <= ?1 + ?2), 0),"
		 " coalesce(sum(revoked = 0 AND not_after > ?1 AND not_after <= ?1 + ?3), 0),"
		 " coalesce(sum(revoked = 0 AND not_after > ?1 AND not_after <= ?1 + ?4), 0),"
		 " coalesce(sum(revoked = 0 AND not_after > ?1 AND not_after <= ?1 + ?5), 0)"
		 " FROM certificates", err, errlen);
	if (s == NULL)
		goto out;
	sqlite3_bind_int64(s, 1, now);
	for (int i = 0; i < STORE_EXPIRY_BUCKETS; i++)
		sqlite3_bind_int64(s, 2 + i, store_expiry_bounds[i]);
	if (sqlite3_step(s) != SQLITE_ROW) {
		dberr(st, err, errlen, "certificate count");
		release(st, s);
		goto out;
	}
	out->certs_valid = (long)sqlite3_column_int64(s, 0);
	out->certs_revoked = (long)sqlite3_column_int64(s, 1);
	out->certs_expired = (long)sqlite3_column_int64(s, 2);
	for (int i = 0; i < STORE_EXPIRY_BUCKETS; i++)
		out->expiring[i] = (long)sqlite3_column_int64(s, 3 + i);
	release(st, s);
	rc = 0;
out:
	rollback(st);     /* read-only: ends the snapshot */
	return rc;
}

int store_cert_list_revoked(struct store *st, const char *backend,
			    int (*cb)(void *arg, const char *serial_hex, int64_t revoked_at),
			    void *arg, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT serial_hex, revoked_at FROM certificates WHERE backend = ? AND revoked <> 0 ORDER BY serial_hex",
			       err, errlen);
	int r;
	if (s == NULL)
		return -1;
	bind_text(s, 1, backend);
	while ((r = sqlite3_step(s)) == SQLITE_ROW)
		if (cb(arg, col_str(s, 0), sqlite3_column_int64(s, 1)) != 0)
			break;
	release(st, s);
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		return dberr(st, err, errlen, "revoked certificate list");
	return 0;
}

int store_cert_count_revoked(struct store *st, const char *backend, long *out, char *err,
			     size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT count(*) FROM certificates WHERE backend = ? AND revoked <> 0",
			       err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, backend);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW)
		*out = (long)sqlite3_column_int64(s, 0);
	release(st, s);
	return r == SQLITE_ROW ? 0 : dberr(st, err, errlen, "revoked certificate count");
}

int store_cert_status(struct store *st, const char *backend, const char *serial_hex, int *revoked,
		      int64_t *revoked_at, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT revoked, revoked_at FROM certificates WHERE backend = ? AND serial_hex = ?",
			       err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, backend);
	bind_text(s, 2, serial_hex);
	int r = sqlite3_step(s), rc;
	if (r == SQLITE_ROW) {
		*revoked = sqlite3_column_int(s, 0) != 0;
		*revoked_at = sqlite3_column_int64(s, 1);
		rc = 1;
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		rc = dberr(st, err, errlen, "certificate status");
	}
	release(st, s);
	return rc;
}

/* See store.h. Records are appended in time order, so the walk stops at the
 * first one older than since (minus a minute of slack for clocks stepping
 * back); kinds are few, so a small array counts them. */
int store_audit_count_since(struct store *st, int64_t since,
			    int (*cb)(void *arg, const char *kind, long count), void *arg,
			    char *err, size_t errlen)
{
	struct {
		char kind[64];
		long n;
	} k[64];
	size_t nk = 0;
	int r;
	/* a range of the audit_time index, which covers the query */
	sqlite3_stmt *s = prep(st, "SELECT kind FROM audit WHERE ts >= ?", err, errlen);

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, since);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		const char *kind = col_str(s, 0);
		size_t i;
		for (i = 0; i < nk && strcmp(k[i].kind, kind) != 0; i++)
			;
		if (i == nk) {
			if (nk == sizeof k / sizeof k[0])
				continue;      /* more kinds than anyone defines: ignore the rest */
			fg_strlcpy(k[nk].kind, kind, sizeof k[nk].kind);
			k[nk++].n = 0;
		}
		k[i].n++;
	}
	release(st, s);
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		return dberr(st, err, errlen, "audit count");
	for (size_t i = 0; i < nk; i++)
		if (cb(arg, k[i].kind, k[i].n) != 0)
			break;
	return 0;
}

/* ---- the dashboard ---- */

int store_group_counts(struct store *st,
		       int (*cb)(void *arg, const char *group, long devices, long active), void *arg,
		       char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT grp, count(*), coalesce(sum(state = 0), 0) FROM devices"
			       " GROUP BY grp ORDER BY grp", err, errlen);
	int r, rc = 0;
	if (s == NULL)
		return -1;
	while ((r = sqlite3_step(s)) == SQLITE_ROW)
		if (cb(arg, col_str(s, 0), (long)sqlite3_column_int64(s, 1), (long)sqlite3_column_int64(s, 2)) != 0)
			break;
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "group count");
	release(st, s);
	return rc;
}

/* The statements of store_device_page, by filter (none, state, group,
 * both): each filter its own text, so that each uses its index. */
static const char *const page_sql[4] = {
	"SELECT " DEVICE_COLS " FROM devices WHERE id > ?1 ORDER BY id LIMIT ?4",
	"SELECT " DEVICE_COLS " FROM devices WHERE state = ?3 AND id > ?1 ORDER BY id LIMIT ?4",
	"SELECT " DEVICE_COLS " FROM devices WHERE grp = ?2 AND id > ?1 ORDER BY id LIMIT ?4",
	"SELECT " DEVICE_COLS " FROM devices WHERE grp = ?2 AND state = ?3 AND id > ?1 ORDER BY id LIMIT ?4",
};
static const char *const page_count_sql[4] = {
	"SELECT count(*) FROM devices",
	"SELECT count(*) FROM devices WHERE state = ?3",
	"SELECT count(*) FROM devices WHERE grp = ?2",
	"SELECT count(*) FROM devices WHERE grp = ?2 AND state = ?3",
};

int store_device_page(struct store *st, const char *group, int state, const char *after, long limit,
		      int (*cb)(void *arg, const struct store_device *d), void *arg, long *total,
		      char *err, size_t errlen)
{
	int f = (state >= 0 ? 1 : 0) | (group != NULL ? 2 : 0), r, rc = -1;
	sqlite3_stmt *s;

	if (exec(st, "BEGIN", err, errlen) != 0)
		return -1;
	/* the count and the page from one snapshot */
	s = prep(st, page_count_sql[f], err, errlen);
	if (s == NULL)
		goto out;
	if (f & 2)
		sqlite3_bind_text(s, 2, group, -1, SQLITE_TRANSIENT);
	if (f & 1)
		sqlite3_bind_int(s, 3, state);
	if (sqlite3_step(s) != SQLITE_ROW) {
		dberr(st, err, errlen, "device count");
		release(st, s);
		goto out;
	}
	*total = (long)sqlite3_column_int64(s, 0);
	release(st, s);
	s = prep(st, page_sql[f], err, errlen);
	if (s == NULL)
		goto out;
	sqlite3_bind_text(s, 1, after ? after : "", -1, SQLITE_TRANSIENT);
	if (f & 2)
		sqlite3_bind_text(s, 2, group, -1, SQLITE_TRANSIENT);
	if (f & 1)
		sqlite3_bind_int(s, 3, state);
	sqlite3_bind_int64(s, 4, limit);
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_device d;
		read_device(s, &d);
		int stop = cb(arg, &d);
		store_device_clear(&d);
		if (stop)
			break;
	}
	if (r != SQLITE_ROW && r != SQLITE_DONE) {
		dberr(st, err, errlen, "device page");
		release(st, s);
		goto out;
	}
	release(st, s);
	rc = 0;
out:
	rollback(st);     /* read-only: ends the snapshot */
	return rc;
}

int store_audit_hourly(struct store *st, int64_t since,
		       int (*cb)(void *arg, int64_t hour, const char *kind, long count), void *arg,
		       char *err, size_t errlen)
{
	/* a range of the audit_time index, which covers the query, counted
	 * here: the rows come in time order, so an hour is done when the
	 * next one starts */
	sqlite3_stmt *s = prep(st, "SELECT ts, kind FROM audit WHERE ts >= ? ORDER BY ts", err, errlen);
	struct {
		char kind[32];
		long n;
	} k[64];
	size_t nk = 0;
	int64_t hour = 0;
	int r, rc = 0, stop = 0;
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, since);
	while (!stop && (r = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t h = sqlite3_column_int64(s, 0) / 3600 * 3600;
		const char *kind = col_str(s, 1);
		size_t i;
		if (h != hour) {
			for (i = 0; i < nk && !stop; i++)
				stop = cb(arg, hour, k[i].kind, k[i].n);
			nk = 0;
			hour = h;
		}
		for (i = 0; i < nk && strcmp(k[i].kind, kind) != 0; i++)
			;
		if (i == nk) {
			if (nk == sizeof k / sizeof k[0])
				continue;      /* more kinds than anyone defines: ignore the rest */
			fg_strlcpy(k[nk].kind, kind, sizeof k[nk].kind);
			k[nk++].n = 0;
		}
		k[i].n++;
	}
	if (!stop && r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "audit activity");
	for (size_t i = 0; rc == 0 && i < nk && !stop; i++)
		stop = cb(arg, hour, k[i].kind, k[i].n);
	release(st, s);
	return rc;
}

/* ---- bulk provisioning and token administration ---- */

void store_token_info_clear(struct store_token_info *ti)
{
	if (ti == NULL)
		return;
	free(ti->bound_json);
	memset(ti, 0, sizeof *ti);
}

#define TOKEN_COLS "id, grp, uses_left, expires_at, created_at, revoked, device_id, bound_json"

static void read_token_info(sqlite3_stmt *s, struct store_token_info *ti)
{
	memset(ti, 0, sizeof *ti);
	col_text(s, 0, ti->t.id, sizeof ti->t.id);
	col_text(s, 1, ti->t.group, sizeof ti->t.group);
	ti->t.uses_left = sqlite3_column_int(s, 2);
	ti->t.expires_at = sqlite3_column_int64(s, 3);
	ti->t.created_at = sqlite3_column_int64(s, 4);
	ti->t.revoked = sqlite3_column_int(s, 5);
	col_text(s, 6, ti->device_id, sizeof ti->device_id);
	ti->bound_json = col_strdup(s, 7);
}

int store_token_add_bound(struct store *st, const char *hash_hex, const char *group, int uses,
			  int64_t expires_at, const char *device_id, const char *bound_json, int64_t now,
			  char id_out[24], char *err, size_t errlen)
{
	char id[24];
	sqlite3_stmt *s;
	json_t *bound = NULL;
	int r;

	if (fg_id_new("tok_", 8, id, sizeof id) != 0) {
		fg_seterr(err, errlen, "cannot draw a token id (no randomness)");
		return -1;
	}
	if (bound_json != NULL && (bound = json_loads(bound_json, 0, NULL)) == NULL) {
		fg_seterr(err, errlen, "token bindings are not a JSON object");
		return -1;
	}
	if (begin(st, err, errlen) != 0)
		goto out_err;
	if (device_id != NULL && *device_id) {
		s = prep(st, "SELECT state FROM devices WHERE id = ?", err, errlen);
		if (s == NULL)
			goto fail;
		bind_text(s, 1, device_id);
		r = sqlite3_step(s);
		int state = r == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
		release(st, s);
		if (r == SQLITE_DONE) {
			fg_seterr(err, errlen, "no device %s; `fleetgate device list` shows the ids", device_id);
			goto fail;
		}
		if (r != SQLITE_ROW) {
			dberr(st, err, errlen, "device lookup");
			goto fail;
		}
		if (state != DEVICE_REGISTERED) {
			fg_seterr(err, errlen, "device %s is %s, not waiting for enrollment; only a pre-registered device (fleetgate device import) takes a device token",
				  device_id, store_device_state_name(state));
			goto fail;
		}
	}
	s = prep(st, "INSERT INTO tokens (id, hash, grp, uses_left, expires_at, created_at, device_id, bound_json) VALUES (?,?,?,?,?,?,?,?)",
		 err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, id);
	bind_text(s, 2, hash_hex);
	bind_text(s, 3, group);
	sqlite3_bind_int(s, 4, uses);
	sqlite3_bind_int64(s, 5, expires_at);
	sqlite3_bind_int64(s, 6, now);
	bind_text(s, 7, device_id);
	if (bound_json)
		bind_text(s, 8, bound_json);
	else
		sqlite3_bind_null(s, 8);
	if (step_done(st, s) != SQLITE_DONE) {
		dberr(st, err, errlen, "token insert");
		goto fail;
	}
	if (audit_json(st, "token.create", device_id, NULL, now, err, errlen, "{s:s, s:s, s:i, s:I, s:O}",
		       "token", id, "group", nz(group), "uses", uses, "expires", (json_int_t)expires_at,
		       "bound", bound ? bound : json_null()) != 0)
		goto fail;
	if (commit(st, err, errlen) != 0)
		goto out_err;
	json_decref(bound);
	memcpy(id_out, id, sizeof id);
	return 0;
fail:
	rollback(st);
out_err:
	json_decref(bound);
	return -1;
}

int store_token_info_get(struct store *st, const char *id, const char *hash_hex,
			 struct store_token_info *out, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, id ? "SELECT " TOKEN_COLS " FROM tokens WHERE id = ?"
			       : "SELECT " TOKEN_COLS " FROM tokens WHERE hash = ?", err, errlen);
	int rc = -1;
	if (s == NULL)
		return -1;
	bind_text(s, 1, id ? id : hash_hex);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		read_token_info(s, out);
		rc = 1;
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		dberr(st, err, errlen, "token lookup");
	}
	release(st, s);
	return rc;
}

int store_token_list(struct store *st, int (*cb)(void *arg, const struct store_token_info *ti),
		     void *arg, char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT " TOKEN_COLS " FROM tokens ORDER BY created_at, id", err, errlen);
	int r, rc = 0;
	if (s == NULL)
		return -1;
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_token_info ti;
		read_token_info(s, &ti);
		int stop = cb(arg, &ti);
		store_token_info_clear(&ti);
		if (stop)
			break;
	}
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		rc = dberr(st, err, errlen, "token list");
	release(st, s);
	return rc;
}

int store_token_revoke(struct store *st, const char *id, int64_t now, char *err, size_t errlen)
{
	char dev[40] = "";
	int r, revoked = 0;
	if (begin(st, err, errlen) != 0)
		return -1;
	sqlite3_stmt *s = prep(st, "SELECT revoked, device_id FROM tokens WHERE id = ?", err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, id);
	r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		revoked = sqlite3_column_int(s, 0);
		col_text(s, 1, dev, sizeof dev);
	}
	release(st, s);
	if (r == SQLITE_DONE || (r == SQLITE_ROW && revoked)) {
		rollback(st);
		return r == SQLITE_DONE ? 0 : 2;
	}
	if (r != SQLITE_ROW) {
		dberr(st, err, errlen, "token lookup");
		goto fail;
	}
	s = prep(st, "UPDATE tokens SET revoked = 1 WHERE id = ?", err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, id);
	if (step_done(st, s) != SQLITE_DONE) {
		dberr(st, err, errlen, "token revoke");
		goto fail;
	}
	if (audit_json(st, "token.revoke", dev, NULL, now, err, errlen, "{s:s}", "token", id) != 0)
		goto fail;
	return commit(st, err, errlen) != 0 ? -1 : 1;
fail:
	rollback(st);
	return -1;
}

int store_device_attrs_get(struct store *st, const char *id, char serial[65], char **attrs_json,
			   char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, "SELECT serial, attrs_json FROM devices WHERE id = ?", err, errlen);
	int rc = -1;
	*attrs_json = NULL;
	serial[0] = '\0';
	if (s == NULL)
		return -1;
	bind_text(s, 1, id);
	int r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		col_text(s, 0, serial, 65);
		*attrs_json = col_strdup(s, 1);
		rc = 1;
	} else if (r == SQLITE_DONE) {
		rc = 0;
	} else {
		dberr(st, err, errlen, "device lookup");
	}
	release(st, s);
	return rc;
}

int store_import_begin(struct store *st, char *err, size_t errlen)
{
	return begin(st, err, errlen);
}

void store_import_abort(struct store *st)
{
	rollback(st);
}

int store_import_commit(struct store *st, const char *audit_detail, int64_t now, char *err,
			size_t errlen)
{
	if (audit_in_tx(st, "device.import", NULL, NULL, audit_detail, now, err, errlen) != 0)
		return -1;
	return commit(st, err, errlen);
}

/* Two attribute texts hold the same object (NULL and "{}" alike). */
static int attrs_same(const char *a, const char *b)
{
	json_t *ja = a && *a ? json_loads(a, 0, NULL) : json_object();
	json_t *jb = b && *b ? json_loads(b, 0, NULL) : json_object();
	int same = ja && jb && json_equal(ja, jb);
	json_decref(ja);
	json_decref(jb);
	return same;
}

int store_import_device(struct store *st, const struct store_import_row *r, int64_t now,
			char dev_id[40], char tok_id[24], char *err, size_t errlen)
{
	sqlite3_stmt *s = prep(st, /* the serial <> '' term lets SQLite use the partial unique index */
			       "SELECT id, grp, hostname, state, attrs_json FROM devices WHERE serial = ? AND serial <> ''",
			       err, errlen);
	int rc;
	if (s == NULL)
		return -1;
	bind_text(s, 1, r->serial);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		/* Registered before: the same data is no change; anything else
		 * is a conflict for the operator to settle (retire the device or
		 * fix the file), never an update behind their back. A device that
		 * has enrolled reports its own hostname, so that is compared only
		 * while the device waits for enrollment. */
		const char *grp = col_str(s, 1), *host = col_str(s, 2);
		int state = sqlite3_column_int(s, 3);
		col_text(s, 0, dev_id, 40);
		if (strcmp(grp, nz(r->group)) != 0)
			fg_seterr(err, errlen, "serial %s is already registered as device %s in group '%s', not '%s'; change the file or retire that device first",
				  r->serial, dev_id, grp, nz(r->group));
		else if (state == DEVICE_REGISTERED && strcmp(host, nz(r->hostname)) != 0)
			fg_seterr(err, errlen, "serial %s is already registered as device %s with hostname '%s', not '%s'; change the file or retire that device first",
				  r->serial, dev_id, host, nz(r->hostname));
		else if (!attrs_same((const char *)sqlite3_column_text(s, 4), r->attrs_json))
			fg_seterr(err, errlen, "serial %s is already registered as device %s with other attributes; change the file or retire that device first",
				  r->serial, dev_id);
		else {
			release(st, s);
			return STORE_IMPORT_UNCHANGED;
		}
		release(st, s);
		return STORE_IMPORT_CONFLICT;
	}
	release(st, s);
	if (rc != SQLITE_DONE)
		return dberr(st, err, errlen, "device lookup");

	char curve[48];
	if (fg_id_new("dev_", 8, dev_id, 40) != 0 || fg_id_new("tok_", 8, tok_id, 24) != 0) {
		fg_seterr(err, errlen, "cannot draw device and token ids (no randomness)");
		return -1;
	}
	snprintf(curve, sizeof curve, "pre:%s", dev_id);
	s = prep(st, "INSERT INTO devices (id, curve_key, grp, hostname, state, created_at, serial, attrs_json) VALUES (?,?,?,?,?,?,?,?)",
		 err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, dev_id);
	bind_text(s, 2, curve);
	bind_text(s, 3, r->group);
	bind_text(s, 4, r->hostname);
	sqlite3_bind_int(s, 5, DEVICE_REGISTERED);
	sqlite3_bind_int64(s, 6, now);
	bind_text(s, 7, r->serial);
	if (r->attrs_json)
		bind_text(s, 8, r->attrs_json);
	else
		sqlite3_bind_null(s, 8);
	if (step_done(st, s) != SQLITE_DONE)
		return dberr(st, err, errlen, "device insert");
	s = prep(st, "INSERT INTO tokens (id, hash, grp, uses_left, expires_at, created_at, device_id) VALUES (?,?,?,1,?,?,?)",
		 err, errlen);
	if (s == NULL)
		return -1;
	bind_text(s, 1, tok_id);
	bind_text(s, 2, r->token_hash);
	bind_text(s, 3, r->group);
	sqlite3_bind_int64(s, 4, r->token_expires);
	sqlite3_bind_int64(s, 5, now);
	bind_text(s, 6, dev_id);
	if (step_done(st, s) != SQLITE_DONE)
		return dberr(st, err, errlen, "token insert");
	if (audit_json(st, "device.register", dev_id, NULL, now, err, errlen, "{s:s, s:s, s:s}", "serial",
		       r->serial, "group", nz(r->group), "token", tok_id) != 0)
		return -1;
	return STORE_IMPORT_ADDED;
}

static int job_admit_bound_body(struct store *st, void *arg, char *err, size_t errlen)
{
	const struct store_admit *a = arg;
	sqlite3_stmt *s;
	char tid[24] = "", serial[65] = "";
	int r, rc = -1;

	/* the same guarded decrement as store_job_admit, and the token must
	 * be the one made for this device */
	s = prep(st, "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ? AND device_id = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?",
		 err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, a->token_hash);
	bind_text(s, 2, a->device_id);
	sqlite3_bind_int64(s, 3, a->now);
	if (step_done(st, s) != SQLITE_DONE) {
		dberr(st, err, errlen, "token use");
		goto fail;
	}
	if (sqlite3_changes(st->db) != 1) {
		fg_seterr(err, errlen, "the enrollment token is used up, expired, revoked or not made for device %s; ask the operator for a new one",
			  a->device_id);
		rc = STORE_E_TOKEN;
		goto fail;
	}
	s = prep(st, "SELECT id FROM tokens WHERE hash = ?", err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, a->token_hash);
	r = sqlite3_step(s);
	if (r == SQLITE_ROW)
		col_text(s, 0, tid, sizeof tid);
	release(st, s);
	if (r != SQLITE_ROW) {
		dberr(st, err, errlen, "token lookup");
		goto fail;
	}
	if (audit_json(st, "token.use", a->device_id, a->request_id, a->now, err, errlen, "{s:s}", "token",
		       tid) != 0)
		goto fail;
	s = prep(st, "UPDATE devices SET curve_key = ?, state = ?, hostname = CASE WHEN hostname = '' THEN ? ELSE hostname END, facts_json = ?, last_seen = ? WHERE id = ? AND state = ?",
		 err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, a->curve_key);
	sqlite3_bind_int(s, 2, DEVICE_ACTIVE);
	bind_text(s, 3, a->hostname);
	if (a->facts_json)
		bind_text(s, 4, a->facts_json);
	else
		sqlite3_bind_null(s, 4);
	sqlite3_bind_int64(s, 5, a->now);
	bind_text(s, 6, a->device_id);
	sqlite3_bind_int(s, 7, DEVICE_REGISTERED);
	r = step_done(st, s);
	if (r == SQLITE_CONSTRAINT_UNIQUE) {   /* devices.curve_key */
		fg_seterr(err, errlen, "CURVE key %.40s is already bound to another device", nz(a->curve_key));
		rc = STORE_E_KEY_TAKEN;
		goto fail;
	}
	if (r != SQLITE_DONE) {
		dberr(st, err, errlen, "device update");
		goto fail;
	}
	if (sqlite3_changes(st->db) != 1) {
		fg_seterr(err, errlen, "device %s is no longer waiting for enrollment (enrolled, revoked or retired meanwhile); ask the operator",
			  a->device_id);
		rc = STORE_E_NOT_REGISTERED;
		goto fail;
	}
	s = prep(st, "SELECT serial FROM devices WHERE id = ?", err, errlen);
	if (s == NULL)
		goto fail;
	bind_text(s, 1, a->device_id);
	if (sqlite3_step(s) == SQLITE_ROW)
		col_text(s, 0, serial, sizeof serial);
	release(st, s);
	if (audit_json(st, "device.enroll", a->device_id, a->request_id, a->now, err, errlen,
		       "{s:s, s:s, s:s}", "serial", serial, "group", nz(a->group), "curve_key",
		       nz(a->curve_key)) != 0)
		goto fail;
	rc = job_insert(st, a, err, errlen);
	if (rc != 0)
		goto fail;
	return 0;
fail:
	return rc;
}

int store_job_admit_bound(struct store *st, const struct store_admit *a, char *err, size_t errlen)
{
	if (a->token_hash == NULL || a->device_id == NULL) {
		fg_seterr(err, errlen, "a bound admission needs the token and the device");
		return -1;
	}
	return write_tx(st, job_admit_bound_body, (void *)a, err, errlen);
}
