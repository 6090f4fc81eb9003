/*
 * fleetgated: the fleetgate gateway daemon.
 *
 *   fleetgated --state DIR [--log-level L] [--log-json] [--syslog] [--log-journal]
 *
 * Runs in the foreground (a service manager supervises it), logs to stderr,
 * and stops cleanly on SIGTERM or SIGINT. A changed policy file (or SIGHUP)
 * is validated and hot-swapped in; a broken one is refused and logged.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "admin.h"
#include "backend.h"
#include "config.h"
#include "confine.h"
#include "fg_log.h"
#include "fg_util.h"
#include "http.h"
#include "server.h"
#include "signer.h"
#include "signer_client.h"
#include "stats.h"
#include "store.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fleetgated --state DIR [--log-level error|warn|info|debug] [--log-json] [--syslog]\n"
		"                  [--log-journal]\n"
		"\n"
		"Serve device enrollments from the gateway state directory DIR,\n"
		"made by `fleetgate init --state DIR`. Under systemd (JOURNAL_STREAM is\n"
		"stderr) lines go to the journal with fields, as with --log-journal.\n");
}

/* Name the backends for the counters, then start the HTTP side when the
 * config asks for it (*http stays NULL, with the reason logged, when it
 * cannot listen). */
static void start_http_side(const struct gw_config *cfg, struct backends *bs, struct http **http)
{
	const char *names[STATS_MAX_BACKENDS];
	size_t n = cfg->nbackends < STATS_MAX_BACKENDS ? cfg->nbackends : STATS_MAX_BACKENDS;
	char err[1024] = "";

	for (size_t i = 0; i < n; i++)
		names[i] = cfg->backends[i].name;
	stats_init(names, n);
	*http = NULL;
	if (cfg->http_listen[0] == '\0')
		return;
	*http = http_start(cfg, bs, err, sizeof err);
	if (*http == NULL)
		fg_err("gateway", NULL, "%s", err);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-json", no_argument, NULL, 'j' },
		{ "syslog", no_argument, NULL, 'S' },
		{ "log-journal", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *state = NULL, *level_arg = NULL;
	enum fg_log_format fmt = FG_LOG_TEXT;
	int fmt_set = 0;
	char err[1024] = "";
	int c, rc = 1;
	struct gw_config *cfg = NULL;
	struct backends *bs = NULL;
	struct store *st = NULL;
	struct http *http = NULL;
	struct signer_client *signer = NULL;
	struct admin *admin = NULL;

	while ((c = getopt_long(argc, argv, "s:l:jSJh", opts, NULL)) != -1) {
		switch (c) {
		case 's': state = optarg; break;
		case 'l': level_arg = optarg; break;
		case 'j': fmt = FG_LOG_JSON; fmt_set = 1; break;
		case 'S': fmt = FG_LOG_SYSLOG; fmt_set = 1; break;
		case 'J': fmt = FG_LOG_JOURNAL; fmt_set = 1; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("fleetgated %s\n", FG_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (state == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	/* Under systemd, stderr is the journal's stream: send entries with
	 * their fields instead (unless a format was asked for). */
	if (!fmt_set && fg_log_stderr_is_journal())
		fmt = FG_LOG_JOURNAL;
	fg_log_init("fleetgated", FG_LOG_INFO, fmt);

	cfg = config_load(state, err, sizeof err);
	if (cfg == NULL) {
		fprintf(stderr, "fleetgated: %s\n", err);
		return 2;
	}
	int level = fg_log_level_parse(level_arg ? level_arg : cfg->log_level);
	if (level < 0) {
		fprintf(stderr, "fleetgated: unknown log level '%s'; use error, warn, info or debug\n",
			level_arg ? level_arg : cfg->log_level);
		goto out;
	}
	fg_log_init("fleetgated", (enum fg_log_level)level, fmt);

	/* SIGTERM, SIGINT and SIGHUP wait for the server's signalfd in every
	 * thread from here on (threads inherit the mask): one that arrives
	 * during start-up stops the daemon once it serves, and never kills a
	 * thread half-way. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0) {
		fg_err("gateway", NULL, "cannot block the stop signals");
		goto out;
	}

	/* The CA keys go to the signer process before anything else starts
	 * (no thread, no socket yet): see docs/security.md. */
	if (signer_key_count(cfg) > 0) {
		const char *hooks = getenv("FLEETGATE_TEST_SIGNER_HOOKS");
		signer = signer_client_start(cfg, hooks && strcmp(hooks, "1") == 0 ? SIGNER_TEST_HOOKS : 0, err,
					     sizeof err);
		if (signer == NULL) {
			fg_err("gateway", NULL, "%s", err);
			goto out;
		}
		fg_info("gateway", NULL, "signer process %d (monitor %d) holds the CA keys of %zu backend%s",
			(int)signer_client_pid(signer), (int)signer_client_monitor_pid(signer), signer_key_count(cfg),
			signer_key_count(cfg) == 1 ? "" : "s");
	}

	/* From here on nothing this process runs (plugins, hooks they start)
	 * can gain privileges through exec: set before any other thread
	 * exists, so every thread has it. The monitor, forked above, keeps
	 * what it needs to start signers. */
	if (config_sandbox_mode(cfg) != SANDBOX_OFF) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
			fg_err("gateway", NULL, "cannot set no_new_privs: %s; the kernel must allow it (or set sandbox = \"off\" in fleetgated.conf)",
			       strerror(errno));
			goto out;
		}
		fg_info("gateway", NULL, "sandbox: daemon pid %d has no_new_privs", (int)getpid());
	} else {
		fg_warn("gateway", NULL, "sandbox = \"off\": the daemon runs without no_new_privs and the signer without its filter");
	}

	/* Open (and migrate) the store once up front, so a missing or newer
	 * store stops us before anything listens. The daemon's connections
	 * leave checkpoints to a thread of their own (store.h). */
	store_defer_checkpoints();
	st = store_open(cfg->store_path, 0, err, sizeof err);
	if (st == NULL) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}
	store_free(st);
	st = NULL;

	/* The policy reader and hook runner, forked before the plugins load
	 * (they find it there) and before the sandbox applies. */
	char asock[PATH_MAX];
	if (admin_socket_path(cfg, asock, sizeof asock) != 0) {
		fg_err("gateway", NULL, "the state directory path is too long for the admin socket");
		goto out;
	}
	if (confine_broker_start(cfg, asock, err, sizeof err) != 0) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}

	bs = backends_open_signer(cfg, 0, signer ? signer_client_sign_cb : NULL, signer, err, sizeof err);
	if (bs == NULL) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}
	admin = admin_start(cfg, signer, err, sizeof err);
	if (admin == NULL) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}

	/* The daemon confines itself while it has one thread: Landlock, then
	 * the threads (docs/security.md). */
	if (confine_apply(cfg, err, sizeof err) != 0) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}
	fg_info("gateway", NULL, "sandbox: daemon pid %d: %s", (int)getpid(), confine_describe());
	if ((signer != NULL && signer_client_watch(signer, err, sizeof err) != 0) ||
	    admin_serve(admin, err, sizeof err) != 0) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}
	if (store_group_commit_start(cfg->store_path, err, sizeof err) != 0 ||
	    store_checkpointer_start(cfg->store_path, err, sizeof err) != 0) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}
	start_http_side(cfg, bs, &http);
	if (cfg->http_listen[0] != '\0' && http == NULL)
		goto out;
	if (server_run(cfg, bs, err, sizeof err) != 0) {
		fg_err("gateway", NULL, "%s", err);
		goto out;
	}
	rc = 0;
out:
	http_stop(http);
	admin_stop(admin);
	backends_free(bs);
	if (store_group_commit_on())
		store_group_commit_stop();
	store_checkpointer_stop();
	confine_broker_stop();
	if (signer != NULL && signer_client_failed(signer))
		rc = 1;
	signer_client_free(signer);
	config_free(cfg);
	return rc;
}
