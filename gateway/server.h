/*
 * server: the ZeroMQ front of fleetgated.
 *
 * The main thread owns the ROUTER socket (CURVE server) and moves frames
 * between it and a pool of worker threads over inproc sockets:
 *
 *   agents --CURVE--> ROUTER --PUSH inproc://fg-work--> workers (PULL)
 *   agents <--------- ROUTER <--PULL inproc://fg-done--- workers (PUSH)
 *
 * Requests travel as [routing id][client key][payload], replies as
 * [routing id][payload]. SIGTERM/SIGINT (through a signalfd) stop it cleanly.
 * The main loop also watches the policy file (policy_reload.h): a changed
 * file, or SIGHUP, is validated and, if good, swapped into every worker
 * between two of its requests.
 */
#ifndef FG_SERVER_H
#define FG_SERVER_H

#include <stddef.h>
#include "config.h"
#include "backend.h"

/* Serve until SIGTERM or SIGINT. 0 on a clean stop, -1 with err. */
int server_run(const struct gw_config *cfg, struct backends *bs, char *err, size_t errlen);

#endif
