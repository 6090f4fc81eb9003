/*
 * policy_fixtures: run a policy against JSON fixtures with expected
 * decisions. `fleetgate policy test` and `policy check` use it, and so
 * does fleetgated before it hot-swaps a changed policy in.
 *
 * A fixtures file holds one case or an array of them:
 *
 *   { "name": "laptop with a token gets a cert",
 *     "request": { "new_device": true, "token": { "group": "laptops" },
 *                  "device": { "id": "dev_01", "group": "laptops" },
 *                  "facts": { "hostname": "lt-1", "secure_boot": true },
 *                  "csr": { "cn": "lt-1", "dns": ["lt-1"], "key_type": "ec" } },
 *     "expect": { "allow": true, "profile": "default", "cn": "lt-1",
 *                 "dns": ["lt-1"], "validity": 2592000 } }
 *
 *   "expect": { "allow": false, "reason_match": "secure boot" }
 *
 * The request becomes the same struct policy_request the gateway builds
 * (so the same req table reaches Lua); fields left out are absent in req,
 * except protocol ("zmq") and request_id ("fixture-N"). Only the fields
 * present in expect are compared. reason_match matches when it is a
 * substring of the reason or, read as a POSIX extended regex, matches it.
 * Unknown keys anywhere are refused, so that a typo never silently tests
 * nothing.
 */
#ifndef FG_POLICY_FIXTURES_H
#define FG_POLICY_FIXTURES_H

#include <stddef.h>
#include <stdio.h>

#include "policy.h"

struct policy_fixtures;

/* Parse and check a fixtures file. NULL with err ("cases.json:12:5: ..."
 * for bad JSON, "cases.json: case 2 'x': request.facts: ..." for a bad
 * case). Free with policy_fixtures_free. */
struct policy_fixtures *policy_fixtures_load(const char *path, char *err, size_t errlen);
void policy_fixtures_free(struct policy_fixtures *fx);
size_t policy_fixtures_count(const struct policy_fixtures *fx);

struct policy_fixtures_result {
	size_t passed;
	size_t failed;              /* mismatched or the policy failed on it */
	char first_failure[768];    /* "cases.json: case 'x': cn: got 'a', want 'b'" */
};

/* Run every case through p (policy_enroll, as a gateway worker does).
 * When report is not NULL, writes "ok - NAME" per passing case and
 * "not ok - NAME" followed by one "  field: got ..., want ..." line per
 * difference for the others. 0 when every case passed, -1 otherwise;
 * *res is filled either way. */
int policy_fixtures_run(const struct policy_fixtures *fx, struct policy *p, FILE *report,
			struct policy_fixtures_result *res);

/* The fixtures file that goes with a policy: "dir/x.lua" -> "dir/x.tests.json"
 * (a name without .lua gets .tests.json appended). 0, or -1 if it does not fit. */
int policy_fixtures_path(const char *policy_path, char *out, size_t outlen);

/* What fleetgated checks before a hot reload, and `fleetgate policy check`
 * reports: compile text (read from path) in a sandbox with lim, check the
 * entry points, and when path's fixtures file exists run it. *ncases (may
 * be NULL) gets the number of fixtures run (0 without a fixtures file).
 * 0, or -1 with a one-line err naming the file (and line, for Lua errors). */
int policy_validate(const char *path, const char *text, size_t len,
		    const struct policy_limits *lim, size_t *ncases, char *err, size_t errlen);

#endif
