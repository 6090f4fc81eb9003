/*
 * wire.c: the Envelope codec with size caps (see fg_wire.h).
 */
#include <stdlib.h>
#include <string.h>

#include "fg_util.h"
#include "fg_wire.h"

int fg_wire_pack(const Fleetgate__Envelope *env, uint8_t **buf, size_t *len)
{
	size_t n = fleetgate__envelope__get_packed_size(env);
	uint8_t *b = malloc(n ? n : 1);
	if (b == NULL)
		return -1;
	if (fleetgate__envelope__pack(env, b) != n) {
		free(b);
		return -1;
	}
	*buf = b;
	*len = n;
	return 0;
}

Fleetgate__Envelope *fg_wire_unpack(const uint8_t *buf, size_t len, size_t max,
				    char *err, size_t errlen)
{
	if (len > max) {
		fg_seterr(err, errlen, "frame of %zu bytes exceeds the %zu-byte limit", len, max);
		return NULL;
	}
	Fleetgate__Envelope *env = fleetgate__envelope__unpack(NULL, len, buf);
	if (env == NULL) {
		fg_seterr(err, errlen, "the %zu-byte frame is not a fleetgate Envelope (protobuf decoding failed)",
			  len);
		return NULL;
	}
	if (env->version != FG_PROTOCOL_VERSION) {
		fg_seterr(err, errlen, "protocol version %u is not supported; this side speaks %d",
			  env->version, FG_PROTOCOL_VERSION);
		goto fail;
	}
	if (!fg_request_id_valid(env->request_id)) {
		fg_seterr(err, errlen, "request id is missing or malformed (8-64 of A-Z a-z 0-9 . _ : -)");
		goto fail;
	}
	if (env->body_case == FLEETGATE__ENVELOPE__BODY__NOT_SET) {
		fg_seterr(err, errlen, "the envelope carries no message");
		goto fail;
	}
	return env;
fail:
	fleetgate__envelope__free_unpacked(env, NULL);
	return NULL;
}

void fg_wire_free(Fleetgate__Envelope *env)
{
	if (env != NULL)
		fleetgate__envelope__free_unpacked(env, NULL);
}

int fg_request_id_new(char out[33])
{
	unsigned char r[16];
	if (fg_random(r, sizeof r) != 0)
		return -1;
	fg_hex(r, sizeof r, out);
	return 0;
}

int fg_request_id_valid(const char *s)
{
	if (s == NULL)
		return 0;
	size_t n = strlen(s);
	if (n < 8 || n > FG_REQUEST_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return 0;
	}
	return 1;
}

const char *fg_status_name(Fleetgate__Status s)
{
	switch (s) {
	case FLEETGATE__STATUS__STATUS_OK: return "ok";
	case FLEETGATE__STATUS__STATUS_DENIED: return "denied";
	case FLEETGATE__STATUS__STATUS_PENDING: return "pending";
	case FLEETGATE__STATUS__STATUS_BAD_REQUEST: return "bad_request";
	case FLEETGATE__STATUS__STATUS_UNAUTHORIZED: return "unauthorized";
	case FLEETGATE__STATUS__STATUS_INTERNAL: return "internal";
	case FLEETGATE__STATUS__STATUS_RESUBMIT: return "resubmit";
	default: return "unspecified";
	}
}
