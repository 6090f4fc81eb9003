/*
 * import.c: bulk provisioning from CSV (see import.h).
 *
 * One pass over the file, which is read whole (100,000 rows are a few
 * megabytes): each row is checked, looked up and inserted inside one open
 * store transaction with prepared statements, and its bundle written. After
 * the first bad row nothing more is written, but the rest of the file is
 * still checked so the operator sees every bad line in one run (up to
 * MAX_REPORTED of them); then the transaction is rolled back and the
 * bundles written so far are removed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "csv.h"
#include "fg_util.h"
#include "import.h"

#define IMPORT_MAX_BYTES (1024L * 1024 * 1024)
#define MAX_REPORTED 20
#define MAX_COLUMNS 64

/* ---- checks ---- */

int import_serial_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._:+-", s[i]))
			return 0;
	return 1;
}

int import_hostname_valid(const char *s)
{
	size_t n = strlen(s), label = 0;
	if (n == 0)
		return 1;
	if (n > 253)
		return 0;
	for (size_t i = 0; i <= n; i++) {
		char c = s[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return 0;
			label = 0;
		} else if (isalnum((unsigned char)c) || (c == '-' && label > 0)) {
			label++;
		} else {
			return 0;
		}
	}
	return 1;
}

int import_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return 0;
	return 1;
}

/* Strip blanks around a field in place (spreadsheets pad them). */
static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

/* ---- serials seen in this file: an open-addressing set with lines ---- */

struct seen {
	struct { char *serial; long line; } *slot;
	size_t cap, n;
};

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

/* The line a serial was first seen on, recording it when new: 0 when new,
 * the earlier line when seen, -1 when out of memory. */
static long seen_add(struct seen *t, const char *serial, long line)
{
	if ((t->n + 1) * 2 > t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 1024;
		struct seen ns = { calloc(nc, sizeof *ns.slot), nc, 0 };
		if (ns.slot == NULL)
			return -1;
		for (size_t i = 0; i < t->cap; i++) {
			if (t->slot[i].serial == NULL)
				continue;
			size_t j = fnv1a(t->slot[i].serial) & (nc - 1);
			while (ns.slot[j].serial)
				j = (j + 1) & (nc - 1);
			ns.slot[j] = t->slot[i];
			ns.n++;
		}
		free(t->slot);
		*t = ns;
	}
	size_t j = fnv1a(serial) & (t->cap - 1);
	while (t->slot[j].serial) {
		if (strcmp(t->slot[j].serial, serial) == 0)
			return t->slot[j].line;
		j = (j + 1) & (t->cap - 1);
	}
	t->slot[j].serial = strdup(serial);
	if (t->slot[j].serial == NULL)
		return -1;
	t->slot[j].line = line;
	t->n++;
	return 0;
}

static void seen_free(struct seen *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->slot[i].serial);
	free(t->slot);
}

/* ---- the import ---- */

struct columns {
	long serial, hostname, group;   /* index, or -1 when absent */
	size_t n;
	char *names[MAX_COLUMNS];       /* strdup'd header names */
};

static void columns_clear(struct columns *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->names[i]);
}

/* Read the header row into c. 0, or -1 with err (without the FILE: prefix). */
static int read_header(char **f, size_t nf, long line, struct columns *c, char *err, size_t errlen)
{
	c->serial = c->hostname = c->group = -1;
	c->n = 0;
	if (nf > MAX_COLUMNS) {
		fg_seterr(err, errlen, "%ld: the header has %zu columns; at most %d are supported", line, nf,
			  MAX_COLUMNS);
		return -1;
	}
	for (size_t i = 0; i < nf; i++) {
		char *name = trim(f[i]);
		for (char *p = name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (!import_name_valid(name)) {
			fg_seterr(err, errlen, "%ld: column %zu of the header is named '%.64s'; name columns with 1-63 of a-z 0-9 . _ - (the first row must be the header: serial,hostname,group,...)",
				  line, i + 1, name);
			return -1;
		}
		for (size_t j = 0; j < c->n; j++)
			if (strcmp(c->names[j], name) == 0) {
				fg_seterr(err, errlen, "%ld: column '%s' appears twice in the header", line, name);
				return -1;
			}
		if ((c->names[c->n] = strdup(name)) == NULL) {
			fg_seterr(err, errlen, "%ld: out of memory", line);
			return -1;
		}
		c->n++;
		if (strcmp(name, "serial") == 0)
			c->serial = (long)i;
		else if (strcmp(name, "hostname") == 0)
			c->hostname = (long)i;
		else if (strcmp(name, "group") == 0)
			c->group = (long)i;
	}
	if (c->serial < 0) {
		fg_seterr(err, errlen, "%ld: the header has no 'serial' column; the first row must name the columns, e.g. serial,hostname,group",
			  line);
		return -1;
	}
	return 0;
}

static double since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void progress(const struct import_opts *o, size_t done, size_t total, long rows)
{
	int pct = total ? (int)((double)done * 100.0 / (double)total) : 100;
	char bar[41];
	int fill = pct * 40 / 100;
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, ' ', (size_t)(40 - fill));
	bar[40] = '\0';
	fprintf(o->errf, "\rimporting [%s] %3d%% %ld rows", bar, pct, rows);
	fflush(o->errf);
}

/* Report a bad row: "FILE:LINE: what". */
static void __attribute__((format(printf, 4, 5)))
bad(const struct import_opts *o, struct import_result *res, long line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (res->errors < MAX_REPORTED) {
		if (o->progress)
			fprintf(o->errf, "\r\033[K");
		fprintf(o->errf, "%s:%ld: %s\n", o->path, line, msg);
	}
	res->errors++;
}

/* The free columns of a row as a JSON object text (malloc'd), NULL for none. */
static char *attrs_of(const struct columns *c, char **f, int *oom)
{
	json_t *o = NULL;
	char *s = NULL;
	*oom = 0;
	for (size_t i = 0; i < c->n; i++) {
		if ((long)i == c->serial || (long)i == c->hostname || (long)i == c->group)
			continue;
		if (o == NULL && (o = json_object()) == NULL)
			goto oom;
		if (json_object_set_new(o, c->names[i], json_string(f[i])) != 0)
			goto oom;
	}
	if (o == NULL)
		return NULL;
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	if (s == NULL)
		goto oom;
	json_decref(o);
	return s;
oom:
	*oom = 1;
	json_decref(o);
	return NULL;
}

int device_import(struct store *st, const struct import_opts *o, struct import_result *res,
		  char *err, size_t errlen)
{
	struct columns cols = { -1, -1, -1, 0, { NULL } };
	struct seen seen = { NULL, 0, 0 };
	struct csv *csv = NULL;
	struct fg_bundle b;
	struct timespec t0;
	char *text = NULL, **f, e2[1024], path[4096];
	char **written = NULL;    /* bundle paths, removed again on failure */
	size_t len = 0, nf, nwritten = 0, wcap = 0;
	long line;
	int r, in_tx = 0, rc = -1;
	int64_t now = fg_now();

	memset(res, 0, sizeof *res);
	memset(&b, 0, sizeof b);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (o->tmpl)
		b = *o->tmpl;
	b.anchors_pem = o->tmpl ? o->tmpl->anchors_pem : NULL;   /* borrowed: never freed here */
	b.expires = now + o->ttl;
	if (o->group && !import_name_valid(o->group)) {
		fg_seterr(err, errlen, "--group '%s' is not a group name: use 1-63 of A-Z a-z 0-9 . _ -", o->group);
		goto out;
	}
	if (fg_read_file(o->path, IMPORT_MAX_BYTES, &text, &len, e2, sizeof e2) != 0) {
		fg_seterr(err, errlen, "%s", e2);
		goto out;
	}
	if (o->bundle_dir && fg_mkdirs(o->bundle_dir, 0700, e2, sizeof e2) != 0) {
		fg_seterr(err, errlen, "bundle directory: %s", e2);
		goto out;
	}
	if ((csv = csv_new(text, len)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	r = csv_next(csv, &f, &nf, &line, e2, sizeof e2);
	if (r <= 0) {
		if (r == 0)
			fg_seterr(err, errlen, "%s is empty; its first line must name the columns, e.g. serial,hostname,group",
				  o->path);
		else
			fg_seterr(err, errlen, "%s:%ld: %s", o->path, line, e2);
		goto out;
	}
	if (read_header(f, nf, line, &cols, e2, sizeof e2) != 0) {
		fg_seterr(err, errlen, "%s:%s", o->path, e2);
		goto out;
	}
	if (store_import_begin(st, e2, sizeof e2) != 0) {
		fg_seterr(err, errlen, "%s", e2);
		goto out;
	}
	in_tx = 1;
	while ((r = csv_next(csv, &f, &nf, &line, e2, sizeof e2)) == 1) {
		char dev[40], tok[24], token[FG_TOKEN_LEN + 1], hash[65];
		res->rows++;
		if (o->progress && res->rows % 2000 == 0)
			progress(o, csv_offset(csv), len, res->rows);
		if (nf != cols.n) {
			bad(o, res, line, "%zu fields, but the header has %zu columns; put a field that holds a comma in double quotes",
			    nf, cols.n);
			continue;
		}
		for (size_t i = 0; i < nf; i++)
			f[i] = trim(f[i]);
		const char *serial = f[cols.serial];
		const char *host = cols.hostname >= 0 ? f[cols.hostname] : "";
		const char *group = cols.group >= 0 ? f[cols.group] : "";
		if (*group == '\0')
			group = o->group ? o->group : "";
		if (*serial == '\0') {
			bad(o, res, line, "no serial; every device needs its serial number");
			continue;
		}
		if (!import_serial_valid(serial)) {
			bad(o, res, line, "serial '%.80s' is not usable: use 1-64 of A-Z a-z 0-9 . _ : + - (not starting with . or -)",
			    serial);
			continue;
		}
		long first = seen_add(&seen, serial, line);
		if (first < 0) {
			fg_seterr(err, errlen, "out of memory at line %ld", line);
			goto out;
		}
		if (first > 0) {
			bad(o, res, line, "serial %s appears again (first on line %ld); each device must appear once",
			    serial, first);
			continue;
		}
		if (!import_hostname_valid(host)) {
			bad(o, res, line, "hostname '%.80s' is not a valid DNS name (labels of a-z 0-9 -, separated by dots)",
			    host);
			continue;
		}
		if (*group == '\0') {
			bad(o, res, line, "no group; fill the group column or pass --group");
			continue;
		}
		if (!import_name_valid(group)) {
			bad(o, res, line, "group '%.80s' is not a group name: use 1-63 of A-Z a-z 0-9 . _ -", group);
			continue;
		}
		int oom;
		char *attrs = attrs_of(&cols, f, &oom);
		if (oom) {
			fg_seterr(err, errlen, "out of memory at line %ld", line);
			goto out;
		}
		if (fg_token_new(token) != 0) {
			free(attrs);
			fg_seterr(err, errlen, "cannot draw random bytes for a token");
			goto out;
		}
		fg_token_hash(token, hash);
		struct store_import_row row = { serial, host, group, attrs, hash, b.expires };
		r = store_import_device(st, &row, now, dev, tok, e2, sizeof e2);
		free(attrs);
		if (r < 0) {
			OPENSSL_cleanse(token, sizeof token);
			fg_seterr(err, errlen, "%s:%ld: %s", o->path, line, e2);
			goto out;
		}
		if (r == STORE_IMPORT_CONFLICT) {
			OPENSSL_cleanse(token, sizeof token);
			bad(o, res, line, "%s", e2);
			continue;
		}
		if (r == STORE_IMPORT_UNCHANGED) {
			OPENSSL_cleanse(token, sizeof token);
			res->unchanged++;
			continue;
		}
		res->imported++;
		if (o->bundle_dir && res->errors == 0) {
			char name[80];
			snprintf(name, sizeof name, "%s.bundle", serial);
			if (fg_path_join(o->bundle_dir, name, path, sizeof path) != 0) {
				OPENSSL_cleanse(token, sizeof token);
				fg_seterr(err, errlen, "bundle path too long in %s", o->bundle_dir);
				goto out;
			}
			fg_strlcpy(b.token, token, sizeof b.token);
			fg_strlcpy(b.group, group, sizeof b.group);
			int w = fg_bundle_write(path, &b, e2, sizeof e2);
			OPENSSL_cleanse(b.token, sizeof b.token);
			if (w == 0) {
				if (nwritten == wcap) {
					size_t nc = wcap ? wcap * 2 : 256;
					char **nw = realloc(written, nc * sizeof *written);
					if (nw != NULL) {
						written = nw;
						wcap = nc;
					}
				}
				if (nwritten == wcap || (written[nwritten] = strdup(path)) == NULL) {
					unlink(path);
					fg_seterr(err, errlen, "out of memory at line %ld", line);
					OPENSSL_cleanse(token, sizeof token);
					goto out;
				}
				nwritten++;
			} else {
				OPENSSL_cleanse(token, sizeof token);
				fg_seterr(err, errlen, "%s:%ld: cannot write the bundle: %s", o->path, line, e2);
				goto out;
			}
		}
		OPENSSL_cleanse(token, sizeof token);
	}
	if (r < 0)
		bad(o, res, line, "%s", e2);   /* the CSV itself is broken here */
	if (o->progress)
		fprintf(o->errf, "\r\033[K");
	if (res->errors > 0) {
		if (res->errors > MAX_REPORTED)
			fprintf(o->errf, "%s: ... and %ld more bad rows\n", o->path, res->errors - MAX_REPORTED);
		fg_seterr(err, errlen, "nothing imported: %ld bad row%s in %s; fix %s and run the import again",
			  res->errors, res->errors == 1 ? "" : "s", o->path, res->errors == 1 ? "it" : "them");
		goto out;
	}
	json_t *d = json_pack("{s:s, s:I, s:I, s:I, s:s?}", "file", o->path, "imported",
			      (json_int_t)res->imported, "unchanged", (json_int_t)res->unchanged,
			      "bundles", (json_int_t)nwritten, "bundle_dir", o->bundle_dir);
	char *ds = d ? json_dumps(d, JSON_COMPACT) : NULL;
	json_decref(d);
	if (ds == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	r = store_import_commit(st, ds, now, e2, sizeof e2);
	free(ds);
	in_tx = 0;   /* a failed commit has rolled back */
	if (r != 0) {
		fg_seterr(err, errlen, "nothing imported: %s", e2);
		goto out;
	}
	res->bundles = (long)nwritten;
	rc = 0;
out:
	if (in_tx)
		store_import_abort(st);
	for (size_t i = 0; i < nwritten; i++) {
		if (rc != 0)
			unlink(written[i]);   /* nothing committed: no bundle either */
		free(written[i]);
	}
	free(written);
	res->seconds = since(&t0);
	OPENSSL_cleanse(b.token, sizeof b.token);
	seen_free(&seen);
	columns_clear(&cols);
	csv_free(csv);
	free(text);
	return rc;
}
