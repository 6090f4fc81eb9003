/*
 * fg_bundle: the bootstrap bundle an operator hands to a device.
 *
 * A text file, mode 0600, readable by people:
 *
 *   # fleetgate bootstrap bundle
 *   version = 1
 *   endpoint = tcp://127.0.0.1:7700
 *   server_key = <40-char Z85 CURVE public key of the gateway>
 *   token = fgt_...            (optional: absent for re-bootstrap without token)
 *   group = laptops
 *   expires = 2026-11-28T11:00:00Z
 *   -----BEGIN CERTIFICATE-----   (one or more trust anchors, PEM)
 *   ...
 *
 * Unknown keys are ignored (forward compatible); missing required keys
 * (version, endpoint, server_key, at least one certificate) are errors.
 */
#ifndef FG_BUNDLE_H
#define FG_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

struct fg_bundle {
	char endpoint[256];     /* ZeroMQ endpoint of the gateway */
	char server_key[41];    /* Z85 CURVE public key of the gateway */
	char token[64];         /* enrollment token, "" when none */
	char group[64];         /* informational */
	int64_t expires;        /* token expiry, Unix seconds, 0 unknown */
	char *anchors_pem;      /* malloc'd PEM of the trust anchors */
};

int fg_bundle_write(const char *path, const struct fg_bundle *b, char *err, size_t errlen);
int fg_bundle_read(const char *path, struct fg_bundle *b, char *err, size_t errlen);
/* Wipe the token and free the PEM; b may be reused afterwards. */
void fg_bundle_clear(struct fg_bundle *b);

#endif
