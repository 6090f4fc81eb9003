/*
 * binding.c: token bindings checked against device facts (see binding.h).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "binding.h"
#include "fg_util.h"

enum kind { EXACT, NOCASE, YESNO };

static const struct {
	const char *key;
	enum kind kind;
	const char *what;     /* how the mismatch is named to the operator */
} keys[] = {
	{ "serial", EXACT, "serial (DMI product_serial)" },
	{ "hostname", NOCASE, "hostname" },
	{ "machine_id", EXACT, "machine-id" },
	{ "os_id", EXACT, "os-release ID" },
	{ "tpm", YESNO, "a TPM" },
	{ "secure_boot", YESNO, "secure boot" },
};
#define NKEYS (sizeof keys / sizeof keys[0])

static int find(const char *key)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].key, key) == 0)
			return (int)i;
	return -1;
}

int binding_valid(const char *key, const char *value, char *err, size_t errlen)
{
	int i = find(key);
	if (i < 0) {
		fg_seterr(err, errlen, "cannot bind a token to '%s': known are serial, hostname, machine_id, os_id, tpm and secure_boot",
			  key);
		return -1;
	}
	if (value == NULL || *value == '\0' || strlen(value) > 255) {
		fg_seterr(err, errlen, "binding %s needs a value of 1-255 characters, e.g. %s=%s", key, key,
			  keys[i].kind == YESNO ? "yes" : "ABC123");
		return -1;
	}
	if (keys[i].kind == YESNO && strcmp(value, "yes") != 0 && strcmp(value, "no") != 0) {
		fg_seterr(err, errlen, "binding %s takes yes or no, not '%s'", key, value);
		return -1;
	}
	return 0;
}

/* The fact a key compares with: a string (or NULL when the device sent
 * none), or for yes/no keys *flag: 1, 0, or -1 when unknown. */
static const char *fact_of(const struct policy_facts *f, const char *key, int *flag)
{
	*flag = -1;
	if (strcmp(key, "serial") == 0)
		return f->dmi_product_serial;
	if (strcmp(key, "hostname") == 0)
		return f->hostname;
	if (strcmp(key, "machine_id") == 0)
		return f->machine_id;
	if (strcmp(key, "os_id") == 0)
		return f->os_id;
	if (strcmp(key, "tpm") == 0)
		*flag = f->tpm_present != 0;
	else if (strcmp(key, "secure_boot") == 0)
		*flag = f->secure_boot;
	return NULL;
}

int binding_check(const char *bound_json, const struct policy_facts *f, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o, *v;
	const char *k;
	int rc = -1;

	if (bound_json == NULL || *bound_json == '\0')
		return 0;
	o = json_loads(bound_json, 0, &je);
	if (!json_is_object(o)) {
		fg_seterr(err, errlen, "the token's bindings are unreadable (%s); revoke it and make a new one",
			  o ? "not an object" : je.text);
		goto out;
	}
	json_object_foreach(o, k, v) {
		const char *want = json_string_value(v);
		int i = find(k), flag;
		if (i < 0 || want == NULL) {
			fg_seterr(err, errlen, "the token is bound to '%s', which this gateway cannot check; revoke it and make a new one",
				  k);
			goto out;
		}
		const char *have = fact_of(f, k, &flag);
		if (keys[i].kind == YESNO) {
			int w = strcmp(want, "yes") == 0;
			if (flag != w) {
				fg_seterr(err, errlen, "the token is bound to %s=%s but this device reports %s %s",
					  k, want, keys[i].what,
					  flag < 0 ? "unknown" : i == find("tpm") ? (flag ? "present" : "absent")
					  : (flag ? "on" : "off"));
				goto out;
			}
		} else if (have == NULL ||
			   (keys[i].kind == NOCASE ? strcasecmp(have, want) : strcmp(have, want)) != 0) {
			if (have == NULL)
				fg_seterr(err, errlen, "the token is bound to %s '%s' but this device reports none",
					  keys[i].what, want);
			else
				fg_seterr(err, errlen, "the token is bound to %s '%s' but this device reports '%.128s'",
					  keys[i].what, want, have);
			goto out;
		}
	}
	rc = 0;
out:
	json_decref(o);
	return rc;
}
