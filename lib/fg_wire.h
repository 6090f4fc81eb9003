/*
 * fg_wire: the Envelope codec (proto/fleetgate.proto) with size caps.
 */
#ifndef FG_WIRE_H
#define FG_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include "fleetgate.pb-c.h"

#define FG_PROTOCOL_VERSION 1
#define FG_WIRE_DEFAULT_MAX (64 * 1024)   /* bytes; gateway config limits.max_message */
#define FG_REQUEST_ID_MAX 64

/* Pack env into a malloc'd buffer (caller frees). 0 or -1. */
int fg_wire_pack(const Fleetgate__Envelope *env, uint8_t **buf, size_t *len);

/* Unpack after checking len <= max; checks version and request id shape.
 * Returns the envelope (free with fg_wire_free) or NULL with err set to a
 * message fit to send back ("frame of 70000 bytes exceeds the 65536-byte limit"). */
Fleetgate__Envelope *fg_wire_unpack(const uint8_t *buf, size_t len, size_t max,
				    char *err, size_t errlen);
void fg_wire_free(Fleetgate__Envelope *env);

/* New request id: 32 lower-case hex digits (128 random bits). */
int fg_request_id_new(char out[33]);
/* 1 when s is 8..64 chars of [A-Za-z0-9._:-], else 0. */
int fg_request_id_valid(const char *s);

/* Name of a status for messages and JSON ("ok", "denied", "pending", ...). */
const char *fg_status_name(Fleetgate__Status s);

#endif
