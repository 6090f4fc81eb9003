/*
 * policy_fixtures: JSON fixtures for policies (see policy_fixtures.h).
 *
 * Loading turns every case into a struct policy_request whose strings are
 * borrowed from the parsed JSON (kept for the life of the fixtures), so a
 * run is policy_enroll plus a field-by-field comparison.
 */
#include <errno.h>
#include <jansson.h>
#include <regex.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fg_util.h"
#include "policy.h"
#include "policy_fixtures.h"

struct fx_case {
	char name[128];
	char request_id[32];
	struct policy_request req;
	const char **dns;       /* malloc'd array; the strings are borrowed */
	json_t *expect;         /* borrowed from the root */
};

struct policy_fixtures {
	json_t *root;
	char file[128];         /* base name, for messages */
	struct fx_case *cases;
	size_t n;
};

/* ---- loading ---- */

enum fx_type { FX_STR, FX_BOOL, FX_TRISTATE, FX_INT };

struct fx_field {
	const char *key;
	enum fx_type type;
	size_t off;             /* offsetof in struct policy_request */
};

#define RQ(k, t, m) { k, t, offsetof(struct policy_request, m) }

static const struct fx_field top_fields[] = {
	RQ("protocol", FX_STR, protocol), RQ("request_id", FX_STR, request_id),
	RQ("slot", FX_STR, slot), RQ("renew", FX_BOOL, renew),
	RQ("new_device", FX_BOOL, new_device), RQ("profile", FX_STR, profile), { NULL, 0, 0 },
};
static const struct fx_field device_fields[] = {
	RQ("id", FX_STR, device_id), RQ("group", FX_STR, device_group),
	RQ("hostname", FX_STR, device_hostname), { NULL, 0, 0 },
};
static const struct fx_field facts_fields[] = {
	RQ("hostname", FX_STR, facts.hostname), RQ("machine_id", FX_STR, facts.machine_id),
	RQ("os_id", FX_STR, facts.os_id), RQ("os_version", FX_STR, facts.os_version),
	RQ("os_pretty_name", FX_STR, facts.os_pretty_name),
	RQ("kernel_release", FX_STR, facts.kernel_release), RQ("arch", FX_STR, facts.arch),
	RQ("dmi_product_uuid", FX_STR, facts.dmi_product_uuid),
	RQ("dmi_product_serial", FX_STR, facts.dmi_product_serial),
	RQ("agent_version", FX_STR, facts.agent_version),
	RQ("secure_boot", FX_TRISTATE, facts.secure_boot),
	RQ("tpm_present", FX_BOOL, facts.tpm_present), { NULL, 0, 0 },
};
static const struct fx_field csr_fields[] = {
	RQ("cn", FX_STR, csr_cn), RQ("key_type", FX_STR, csr_key_type),
	RQ("curve", FX_STR, csr_curve), RQ("key_bits", FX_INT, csr_key_bits), { NULL, 0, 0 },
};

static const char *const expect_keys[] = {
	"allow", "profile", "backend", "cn", "dns", "ip", "email", "validity", "challenge",
	"acme_challenge", "keygen", "reason", "reason_match", NULL,
};

/* Prefix for messages about case i: "cases.json: case 3 'name'". */
static void case_err(const struct policy_fixtures *fx, size_t i, const char *name, char *err,
		     size_t errlen, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void case_err(const struct policy_fixtures *fx, size_t i, const char *name, char *err,
		     size_t errlen, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fg_seterr(err, errlen, "%s: case %zu '%s': %s", fx->file, i + 1, name, msg);
}

/* "a, b, c" of a field table's keys, for "valid fields are ...". */
static void field_list(const struct fx_field *f, const char *const *extra, char *out,
		       size_t outlen)
{
	size_t n = 0;

	out[0] = '\0';
	for (; f->key != NULL && n < outlen; f++)
		n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? ", " : "", f->key);
	for (; extra && *extra && n < outlen; extra++)
		n += (size_t)snprintf(out + n, outlen - n, ", %s", *extra);
}

/* Fill r's fields from the object obj (named where, e.g. "request.facts")
 * with the table f; extra names keys the caller handles itself ("dns"). */
static int take_fields(json_t *obj, const char *where, const struct fx_field *f,
		       const char *const *extra, struct policy_request *r, char *msg, size_t msglen)
{
	const char *k;
	json_t *v;

	if (!json_is_object(obj)) {
		fg_seterr(msg, msglen, "%s must be an object { ... }", where);
		return -1;
	}
	json_object_foreach(obj, k, v) {
		const struct fx_field *x = f;
		char *base = (char *)r;
		int handled = 0;

		for (const char *const *e = extra; e && *e; e++)
			if (strcmp(*e, k) == 0)
				handled = 1;
		if (handled)
			continue;
		while (x->key != NULL && strcmp(x->key, k) != 0)
			x++;
		if (x->key == NULL) {
			char list[512];
			field_list(f, extra, list, sizeof list);
			fg_seterr(msg, msglen, "%s: unknown field '%s'; valid fields are %s", where, k, list);
			return -1;
		}
		switch (x->type) {
		case FX_STR:
			if (!json_is_string(v)) {
				fg_seterr(msg, msglen, "%s.%s must be a string", where, k);
				return -1;
			}
			*(const char **)(base + x->off) = json_string_value(v);
			break;
		case FX_BOOL:
			if (!json_is_boolean(v)) {
				fg_seterr(msg, msglen, "%s.%s must be true or false", where, k);
				return -1;
			}
			*(int *)(base + x->off) = json_is_true(v);
			break;
		case FX_TRISTATE:
			if (!json_is_boolean(v) && !json_is_null(v)) {
				fg_seterr(msg, msglen, "%s.%s must be true, false or null (unknown)", where, k);
				return -1;
			}
			*(int *)(base + x->off) = json_is_null(v) ? -1 : json_is_true(v);
			break;
		case FX_INT:
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 65536) {
				fg_seterr(msg, msglen, "%s.%s must be a whole number from 0 to 65536", where, k);
				return -1;
			}
			*(int *)(base + x->off) = (int)json_integer_value(v);
			break;
		}
	}
	return 0;
}

/* A JSON array of strings (where names it), at most POLICY_MAX_NAMES. */
static int string_list(json_t *v, const char *where, char *msg, size_t msglen)
{
	size_t i;
	json_t *e;

	if (!json_is_array(v)) {
		fg_seterr(msg, msglen, "%s must be a list of strings, e.g. [\"a.example\"]", where);
		return -1;
	}
	if (json_array_size(v) > 64) {
		fg_seterr(msg, msglen, "%s has %zu entries; at most 64 are allowed", where, json_array_size(v));
		return -1;
	}
	json_array_foreach(v, i, e) {
		if (!json_is_string(e)) {
			fg_seterr(msg, msglen, "%s[%zu] must be a string", where, i);
			return -1;
		}
	}
	return 0;
}

/* The request object of one case into c->req. */
static int load_request(struct fx_case *c, json_t *rq, char *msg, size_t msglen)
{
	static const char *const top_extra[] = { "device", "token", "facts", "csr", NULL };
	static const char *const csr_extra[] = { "dns", NULL };
	struct policy_request *r = &c->req;
	json_t *v;

	r->facts.secure_boot = -1;
	if (take_fields(rq, "request", top_fields, top_extra, r, msg, msglen) != 0)
		return -1;
	if (r->request_id == NULL)
		r->request_id = c->request_id;
	if ((v = json_object_get(rq, "device")) != NULL &&
	    take_fields(v, "request.device", device_fields, NULL, r, msg, msglen) != 0)
		return -1;
	if ((v = json_object_get(rq, "token")) != NULL && !json_is_null(v)) {
		static const struct fx_field tf[] = { RQ("group", FX_STR, token_group), { NULL, 0, 0 } };
		if (take_fields(v, "request.token", tf, NULL, r, msg, msglen) != 0)
			return -1;
		if (r->token_group == NULL)
			r->token_group = "";    /* a token without a group: req.token = {} */
	}
	if ((v = json_object_get(rq, "facts")) != NULL &&
	    take_fields(v, "request.facts", facts_fields, NULL, r, msg, msglen) != 0)
		return -1;
	if ((v = json_object_get(rq, "csr")) != NULL) {
		json_t *dns, *e;
		size_t i;
		if (take_fields(v, "request.csr", csr_fields, csr_extra, r, msg, msglen) != 0)
			return -1;
		if ((dns = json_object_get(v, "dns")) != NULL) {
			if (string_list(dns, "request.csr.dns", msg, msglen) != 0)
				return -1;
			c->dns = calloc(json_array_size(dns) + 1, sizeof *c->dns);
			if (c->dns == NULL) {
				fg_seterr(msg, msglen, "out of memory");
				return -1;
			}
			json_array_foreach(dns, i, e)
				c->dns[i] = json_string_value(e);
			r->csr_dns = c->dns;
			r->csr_ndns = json_array_size(dns);
		}
	}
	return 0;
}

/* Check the expect object's shape so that a run compares only what makes
 * sense: allow is required, and fields of the other outcome are refused. */
static int check_expect(json_t *ex, char *msg, size_t msglen)
{
	const char *k;
	json_t *v, *allow = json_object_get(ex, "allow");

	if (!json_is_object(ex)) {
		fg_seterr(msg, msglen, "expect must be an object, e.g. {\"allow\": true, \"cn\": \"x\"}");
		return -1;
	}
	if (!json_is_boolean(allow)) {
		fg_seterr(msg, msglen, "expect.allow must be true or false");
		return -1;
	}
	json_object_foreach(ex, k, v) {
		const char *const *e = expect_keys;
		while (*e && strcmp(*e, k) != 0)
			e++;
		if (*e == NULL) {
			fg_seterr(msg, msglen, "expect: unknown field '%s'; valid fields are allow, profile, "
				  "backend, cn, dns, ip, email, validity, challenge, acme_challenge, keygen (allowed) or reason, "
				  "reason_match (denied)", k);
			return -1;
		}
		if (strcmp(k, "allow") == 0)
			continue;
		int deny_field = strcmp(k, "reason") == 0 || strcmp(k, "reason_match") == 0;
		if (json_is_true(allow) == deny_field) {
			fg_seterr(msg, msglen, "expect.%s only applies when allow is %s", k,
				  deny_field ? "false" : "true");
			return -1;
		}
		if (strcmp(k, "dns") == 0 || strcmp(k, "ip") == 0 || strcmp(k, "email") == 0) {
			char where[32];
			snprintf(where, sizeof where, "expect.%s", k);
			if (string_list(v, where, msg, msglen) != 0)
				return -1;
		} else if (strcmp(k, "validity") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) <= 0) {
				fg_seterr(msg, msglen, "expect.validity must be a positive whole number of seconds");
				return -1;
			}
		} else if (!json_is_string(v)) {
			fg_seterr(msg, msglen, "expect.%s must be a string", k);
			return -1;
		}
	}
	return 0;
}

static int load_case(struct policy_fixtures *fx, size_t i, json_t *obj, char *err, size_t errlen)
{
	struct fx_case *c = &fx->cases[i];
	char msg[600];
	const char *k;
	json_t *v, *name, *rq;

	snprintf(c->name, sizeof c->name, "case %zu", i + 1);
	snprintf(c->request_id, sizeof c->request_id, "fixture-%zu", i + 1);
	if (!json_is_object(obj)) {
		case_err(fx, i, c->name, err, errlen,
			 "must be an object {\"name\": ..., \"request\": {...}, \"expect\": {...}}");
		return -1;
	}
	name = json_object_get(obj, "name");
	if (json_is_string(name))
		fg_strlcpy(c->name, json_string_value(name), sizeof c->name);
	json_object_foreach(obj, k, v) {
		if (strcmp(k, "name") && strcmp(k, "request") && strcmp(k, "expect") &&
		    strcmp(k, "comment")) {
			case_err(fx, i, c->name, err, errlen,
				 "unknown field '%s'; a case has name, comment, request and expect", k);
			return -1;
		}
	}
	if (name != NULL && !json_is_string(name)) {
		case_err(fx, i, c->name, err, errlen, "name must be a string");
		return -1;
	}
	rq = json_object_get(obj, "request");
	c->expect = json_object_get(obj, "expect");
	if (rq == NULL || c->expect == NULL) {
		case_err(fx, i, c->name, err, errlen, "needs both \"request\" and \"expect\"");
		return -1;
	}
	if (load_request(c, rq, msg, sizeof msg) != 0 || check_expect(c->expect, msg, sizeof msg) != 0) {
		case_err(fx, i, c->name, err, errlen, "%s", msg);
		return -1;
	}
	return 0;
}

#define FIXTURES_MAX_FILE (16u * 1024 * 1024)

struct policy_fixtures *policy_fixtures_load(const char *path, char *err, size_t errlen)
{
	struct policy_fixtures *fx = NULL, *ret = NULL;
	const char *base = strrchr(path, '/');
	json_error_t je;
	json_t *v;
	size_t i;

	fx = calloc(1, sizeof *fx);
	if (fx == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	fg_strlcpy(fx->file, base ? base + 1 : path, sizeof fx->file);
	/* Read with fg_read_file, so that a confined daemon reads it as it
	 * reads the policy (fg_set_read_opener). */
	char *text = NULL;
	size_t tlen = 0;
	char rerr[1024];
	if (fg_read_file(path, FIXTURES_MAX_FILE, &text, &tlen, rerr, sizeof rerr) != 0) {
		fg_seterr(err, errlen, "%s", rerr);
		goto out;
	}
	fx->root = json_loadb(text, tlen, JSON_REJECT_DUPLICATES, &je);
	free(text);
	if (fx->root == NULL) {
		if (je.line > 0)
			fg_seterr(err, errlen, "%s:%d:%d: %s; fix the JSON", path, je.line, je.column, je.text);
		else
			fg_seterr(err, errlen, "cannot read fixtures %s: %s", path, je.text);
		goto out;
	}
	if (json_is_object(fx->root)) {
		fx->n = 1;
	} else if (json_is_array(fx->root) && json_array_size(fx->root) > 0) {
		fx->n = json_array_size(fx->root);
	} else {
		fg_seterr(err, errlen, "%s: expected one case {...} or a non-empty list of cases [{...}, ...]",
			  path);
		goto out;
	}
	fx->cases = calloc(fx->n, sizeof *fx->cases);
	if (fx->cases == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	if (json_is_object(fx->root)) {
		if (load_case(fx, 0, fx->root, err, errlen) != 0)
			goto out;
	} else {
		json_array_foreach(fx->root, i, v) {
			if (load_case(fx, i, v, err, errlen) != 0)
				goto out;
		}
	}
	ret = fx;
	fx = NULL;
out:
	policy_fixtures_free(fx);
	return ret;
}

void policy_fixtures_free(struct policy_fixtures *fx)
{
	if (fx == NULL)
		return;
	for (size_t i = 0; fx->cases && i < fx->n; i++)
		free(fx->cases[i].dns);
	free(fx->cases);
	json_decref(fx->root);
	free(fx);
}

size_t policy_fixtures_count(const struct policy_fixtures *fx)
{
	return fx->n;
}

/* ---- running ---- */

/* Differences of one case, one "field: got ..., want ..." line each. */
struct diff {
	char text[4096];
	size_t len;
	size_t count;
	char first[512];
};

static void diff_add(struct diff *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void diff_add(struct diff *d, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (d->count++ == 0)
		fg_strlcpy(d->first, line, sizeof d->first);
	if (d->len < sizeof d->text)
		d->len += (size_t)snprintf(d->text + d->len, sizeof d->text - d->len, "  %s\n", line);
}

static void cmp_str(struct diff *d, json_t *ex, const char *field, const char *got)
{
	json_t *w = json_object_get(ex, field);
	const char *want;

	if (w == NULL)
		return;
	want = json_string_value(w);
	/* "" from the policy means the gateway's default profile. */
	if (strcmp(field, "profile") == 0 && got[0] == '\0' && strcmp(want, "default") == 0)
		return;
	if (strcmp(got, want) != 0)
		diff_add(d, "%s: got '%s', want '%s'", field, got, want);
}

/* "['a', 'b']" of n strings into out. */
static void list_text(char *const *names, size_t n, json_t *arr, char *out, size_t outlen)
{
	size_t len = 0, cnt = arr ? json_array_size(arr) : n;

	len += (size_t)snprintf(out, outlen, "[");
	for (size_t i = 0; i < cnt && len < outlen; i++)
		len += (size_t)snprintf(out + len, outlen - len, "%s'%s'", i ? ", " : "",
					arr ? json_string_value(json_array_get(arr, i)) : names[i]);
	if (len < outlen)
		snprintf(out + len, outlen - len, "]");
}

static void cmp_list(struct diff *d, json_t *ex, const char *field, char *const *got, size_t n)
{
	json_t *w = json_object_get(ex, field);
	int same;
	char a[400], b[400];

	if (w == NULL)
		return;
	same = json_array_size(w) == n;
	for (size_t i = 0; same && i < n; i++)
		same = strcmp(got[i], json_string_value(json_array_get(w, i))) == 0;
	if (same)
		return;
	list_text(got, n, NULL, a, sizeof a);
	list_text(NULL, 0, w, b, sizeof b);
	diff_add(d, "%s: got %s, want %s", field, a, b);
}

/* reason_match: a substring, or a POSIX extended regex that matches. */
static int reason_matches(const char *reason, const char *pattern)
{
	regex_t re;
	int hit;

	if (strstr(reason, pattern) != NULL)
		return 1;
	if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
		return 0;
	hit = regexec(&re, reason, 0, NULL, 0) == 0;
	regfree(&re);
	return hit;
}

static void compare(struct diff *d, json_t *ex, const struct policy_decision *dec)
{
	int want_allow = json_is_true(json_object_get(ex, "allow"));
	json_t *w;

	if (dec->allow != want_allow) {
		if (dec->allow)
			diff_add(d, "allow: got true (allow{ cn = '%s', profile = '%s' }), want false",
				 dec->cn, dec->profile);
		else
			diff_add(d, "allow: got false (deny: '%s'), want true", dec->reason);
		return;
	}
	if (!dec->allow) {
		if ((w = json_object_get(ex, "reason")) != NULL &&
		    strcmp(dec->reason, json_string_value(w)) != 0)
			diff_add(d, "reason: got '%s', want '%s'", dec->reason, json_string_value(w));
		if ((w = json_object_get(ex, "reason_match")) != NULL &&
		    !reason_matches(dec->reason, json_string_value(w)))
			diff_add(d, "reason: got '%s', want a match for '%s'", dec->reason,
				 json_string_value(w));
		return;
	}
	cmp_str(d, ex, "profile", dec->profile);
	cmp_str(d, ex, "backend", dec->backend);
	cmp_str(d, ex, "cn", dec->cn);
	cmp_list(d, ex, "dns", dec->dns, dec->ndns);
	cmp_list(d, ex, "ip", dec->ip, dec->nip);
	cmp_list(d, ex, "email", dec->email, dec->nemail);
	if ((w = json_object_get(ex, "validity")) != NULL && dec->validity != json_integer_value(w))
		diff_add(d, "validity: got %lld, want %lld%s", (long long)dec->validity,
			 (long long)json_integer_value(w), dec->validity == 0 ? " (none: the profile's default)" : "");
	cmp_str(d, ex, "challenge", dec->challenge);
	cmp_str(d, ex, "acme_challenge", dec->acme_challenge);
	cmp_str(d, ex, "keygen", dec->keygen);
}

int policy_fixtures_run(const struct policy_fixtures *fx, struct policy *p, FILE *report,
			struct policy_fixtures_result *res)
{
	memset(res, 0, sizeof *res);
	for (size_t i = 0; i < fx->n; i++) {
		const struct fx_case *c = &fx->cases[i];
		struct policy_decision dec;
		struct diff d;
		char err[1024] = "";

		memset(&d, 0, sizeof d);
		if (policy_enroll(p, &c->req, &dec, err, sizeof err) != 0)
			diff_add(&d, "error: the policy failed: %s", err);
		else
			compare(&d, c->expect, &dec);
		policy_decision_clear(&dec);
		if (d.count == 0) {
			res->passed++;
			if (report)
				fprintf(report, "ok - %s\n", c->name);
			continue;
		}
		if (res->failed++ == 0)
			fg_seterr(res->first_failure, sizeof res->first_failure, "%s: case '%s': %s%s",
				 fx->file, c->name, d.first, d.count > 1 ? " (and more)" : "");
		if (report)
			fprintf(report, "not ok - %s\n%s", c->name, d.text);
	}
	return res->failed ? -1 : 0;
}

int policy_fixtures_path(const char *policy_path, char *out, size_t outlen)
{
	size_t n = strlen(policy_path);

	if (n >= 4 && strcmp(policy_path + n - 4, ".lua") == 0)
		n -= 4;
	if ((size_t)snprintf(out, outlen, "%.*s.tests.json", (int)n, policy_path) >= outlen)
		return -1;
	return 0;
}

int policy_validate(const char *path, const char *text, size_t len,
		    const struct policy_limits *lim, size_t *ncases, char *err, size_t errlen)
{
	const char *base = strrchr(path, '/');
	struct policy *p = NULL;
	struct policy_fixtures *fx = NULL;
	struct policy_fixtures_result res;
	char fxpath[4096];
	struct stat sb;
	int rc = -1;

	if (ncases)
		*ncases = 0;
	p = policy_new_text(base ? base + 1 : path, text, len, lim, err, errlen);
	if (p == NULL)
		goto out;
	if (policy_fixtures_path(path, fxpath, sizeof fxpath) != 0) {
		fg_seterr(err, errlen, "%s: the path is too long", path);
		goto out;
	}
	if (stat(fxpath, &sb) != 0) {
		if (errno == ENOENT) {
			rc = 0;
			goto out;
		}
		fg_seterr(err, errlen, "cannot read the fixtures %s: %s", fxpath, strerror(errno));
		goto out;
	}
	fx = policy_fixtures_load(fxpath, err, errlen);
	if (fx == NULL)
		goto out;
	if (policy_fixtures_run(fx, p, NULL, &res) != 0) {
		fg_seterr(err, errlen, "%zu of %zu fixtures failed; first: %s; run `fleetgate policy test %s %s`",
			  res.failed, fx->n, res.first_failure, path, fxpath);
		goto out;
	}
	if (ncases)
		*ncases = fx->n;
	rc = 0;
out:
	policy_fixtures_free(fx);
	policy_free(p);
	return rc;
}
