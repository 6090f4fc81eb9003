/*
 * admin: the gateway's admin socket, <state>/admin.sock, for operator
 * commands that must go through the running daemon (docs/security.md).
 *
 * While fleetgated runs, the CA key is in its signer process and nowhere
 * else; the operator CLI then signs what it must (the CRL after a
 * revocation, the algorithm query of a local backend's plugin) through
 * this socket instead of loading the key itself. The daemon authorises
 * each connection by SO_PEERCRED: root, the daemon's own user, or members
 * of admin_group (fleetgated.conf); anyone else is told which group to
 * join and disconnected. Only the kinds an operator command needs pass
 * (FG_SIGN_ALGORITHM, FG_SIGN_CRL), and each still crosses the signer's
 * own checks.
 *
 * Messages are framed as on the signer socket (signer_ipc.h): a REQUEST
 * carries an fgsigner.Request and is answered with an fgsigner.Reply;
 * ADMIN_MSG_STATUS is answered with a JSON object (ADMIN_MSG_STATUS_REPLY).
 */
#ifndef FG_ADMIN_H
#define FG_ADMIN_H

#include <stddef.h>

#include "config.h"
#include "signer_client.h"

enum {
	ADMIN_MSG_STATUS = 3,          /* body empty; reply: JSON */
	ADMIN_MSG_STATUS_REPLY = 4,
};

struct admin;

/* Listen on <state>/admin.sock (a stale socket is replaced; one a live
 * daemon answers on is an error); no thread yet. signer may be NULL (no
 * local backend). NULL with err on failure. */
struct admin *admin_start(const struct gw_config *cfg, struct signer_client *signer, char *err,
			  size_t errlen);
/* Serve it from a thread of its own (once the daemon is confined). 0, or
 * -1 with err. */
int admin_serve(struct admin *a, char *err, size_t errlen);
/* Stop serving and remove the socket. NULL is a no-op. */
void admin_stop(struct admin *a);

/* <state>/admin.sock into out. 0, or -1 when too long. */
int admin_socket_path(const struct gw_config *cfg, char *out, size_t outlen);

/* ---- the CLI's side ---- */

struct admin_client;

/* Connect to a running daemon's admin socket. Returns 1 with *out when
 * one answers, 0 when no daemon listens (no socket, or nobody behind it),
 * -1 with err when one listens but refuses us or cannot be reached. */
int admin_connect(const struct gw_config *cfg, struct admin_client **out, char *err, size_t errlen);
void admin_client_free(struct admin_client *c);

/* Sign through the daemon's signer; the contract of signer_client_sign. */
int admin_client_sign(void *client, const char *backend, int kind, const char *profile, const char *serial,
		      const unsigned char *in, size_t len, unsigned char **out, size_t *outlen, char *err,
		      size_t errlen);

/* The daemon's status (JSON text, malloc'd) or NULL with err. */
char *admin_client_status(struct admin_client *c, char *err, size_t errlen);

#endif
