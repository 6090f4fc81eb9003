/*
 * binding: the attributes an enrollment token is bound to.
 *
 * `fleetgate token create --bind KEY=VALUE` stores them (tokens.bound_json,
 * a JSON object of strings); at enrollment the gateway refuses a device
 * whose facts do not match every one of them:
 *
 *   serial=S         facts dmi_product_serial is exactly S
 *   hostname=H       facts hostname is H (case-insensitive)
 *   machine_id=M     facts machine_id is exactly M
 *   os_id=O          facts os_id is exactly O
 *   tpm=yes|no       facts tpm_present is true / false
 *   secure_boot=yes|no  facts secure_boot is true / false (unknown matches neither)
 *
 * Facts are what the device says about itself: a binding narrows who may
 * use a leaked bundle, it does not prove an identity.
 */
#ifndef FG_BINDING_H
#define FG_BINDING_H

#include <stddef.h>

#include "policy.h"

/* 0 when KEY=VALUE is a binding this gateway can check, else -1 with err
 * saying which keys and values are known. */
int binding_valid(const char *key, const char *value, char *err, size_t errlen);

/* 0 when facts f match every binding in bound_json (NULL or "{}": none);
 * -1 with err naming the first mismatch ("bound to serial 'A' but this
 * device reports serial 'B'"). An unknown key or a malformed text fails
 * closed. */
int binding_check(const char *bound_json, const struct policy_facts *f, char *err, size_t errlen);

#endif
