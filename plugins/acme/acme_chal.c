/*
 * acme_chal.c: thumbprints, key authorizations, dns-01 values and the
 * dns-01 hook runner (see acme_chal.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "acme_chal.h"
#include "fgp.h"

extern char **environ;

/* base64url (RFC 4648 5, no padding) of SHA-256(p[0..n)) into out. */
static int b64_sha256(const void *p, size_t n, char out[ACME_B64_SHA256_LEN + 1])
{
	unsigned char md[32];
	unsigned char enc[48];
	unsigned int mdlen = 0;

	if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return -1;
	int len = EVP_EncodeBlock(enc, md, 32);     /* 44 with one '=' */
	while (len > 0 && enc[len - 1] == '=')
		len--;
	if (len != ACME_B64_SHA256_LEN)
		return -1;
	for (int i = 0; i < len; i++)
		out[i] = enc[i] == '+' ? '-' : enc[i] == '/' ? '_' : (char)enc[i];
	out[len] = '\0';
	return 0;
}

int acme_thumbprint(const char *jwk_json, char out[ACME_B64_SHA256_LEN + 1])
{
	json_t *j = json_loads(jwk_json, 0, NULL);
	char *canon = NULL;
	int rc = -1;

	if (!json_is_object(j))
		goto out;
	/* RFC 7638 3.3: members sorted, no whitespace; the values of the
	 * required members are plain strings, which jansson writes as is */
	if ((canon = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
		goto out;
	rc = b64_sha256(canon, strlen(canon), out);
out:
	free(canon);
	json_decref(j);
	return rc;
}

int acme_token_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n > 0 &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

int acme_key_authorization(const char *token, const char *thumbprint, char *out, size_t outlen)
{
	size_t tl = token ? strlen(token) : 0;

	if (tl < 16 || tl > 127 || !acme_token_ok(token) || !acme_token_ok(thumbprint))
		return -1;
	int n = snprintf(out, outlen, "%s.%s", token, thumbprint);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

int acme_dns_value(const char *key_authorization, char out[ACME_B64_SHA256_LEN + 1])
{
	if (key_authorization == NULL || key_authorization[0] == '\0')
		return -1;
	return b64_sha256(key_authorization, strlen(key_authorization), out);
}

/* Keep the last outlen-1 bytes seen in output. */
static void keep_tail(char *output, size_t outlen, size_t *used, const char *buf, size_t n)
{
	if (outlen < 2)
		return;
	size_t cap = outlen - 1;
	if (n >= cap) {
		memcpy(output, buf + n - cap, cap);
		*used = cap;
	} else {
		if (*used + n > cap) {
			size_t drop = *used + n - cap;
			memmove(output, output + drop, *used - drop);
			*used -= drop;
		}
		memcpy(output + *used, buf, n);
		*used += n;
	}
	output[*used] = '\0';
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int acme_hook_run(const char *path, const char *action, const char *const *env_add, int timeout_s,
		  char *output, size_t outlen, char *err, size_t errlen)
{
	char **envp = NULL;
	size_t ne = 0, na = 0, used = 0;
	int fds[2] = { -1, -1 }, rc = -1, status = 0, timed_out = 0;
	pid_t pid = -1;

	if (output != NULL && outlen > 0)
		output[0] = '\0';
	/* everything the child needs is made before fork: after it, only
	 * async-signal-safe calls (the gateway has threads) */
	while (environ != NULL && environ[ne] != NULL)
		ne++;
	while (env_add != NULL && env_add[na] != NULL)
		na++;
	if ((envp = calloc(ne + na + 1, sizeof *envp)) == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		goto out;
	}
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "FLEETGATE_ACME_", 15) != 0)
			envp[k++] = environ[i];
	for (size_t i = 0; i < na; i++)
		envp[k++] = (char *)env_add[i];
	char *argv[] = { (char *)path, (char *)action, NULL };
	if (pipe2(fds, O_CLOEXEC) != 0) {
		fgp_seterr(err, errlen, "cannot run %s: pipe: %s", path, strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		fgp_seterr(err, errlen, "cannot run %s: fork: %s", path, strerror(errno));
		goto out;
	}
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setpgid(0, 0);
		int dn = open("/dev/null", O_RDONLY);
		if (dn >= 0)
			dup2(dn, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		execve(path, argv, envp);
		static const char msg[] = "exec failed\n";
		ssize_t w = write(2, msg, sizeof msg - 1);
		(void)w;
		_exit(127);
	}
	close(fds[1]);
	fds[1] = -1;
	int64_t deadline = mono_ms() + (int64_t)timeout_s * 1000;
	for (;;) {
		int64_t left = deadline - mono_ms();
		if (left <= 0) {
			timed_out = 1;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			break;
		}
		struct pollfd p = { fds[0], POLLIN, 0 };
		int r = poll(&p, 1, left > 1000 ? 1000 : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		char buf[1024];
		ssize_t n = read(fds[0], buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;      /* EOF: the hook (and its children) closed output */
		if (output != NULL)
			keep_tail(output, outlen, &used, buf, (size_t)n);
	}
	/* reap: after EOF the hook exits soon; give it until the deadline */
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			fgp_seterr(err, errlen, "%s: waitpid: %s", path, strerror(errno));
			goto out;
		}
		if (!timed_out && mono_ms() >= deadline) {
			timed_out = 1;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
		}
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	pid = -1;
	if (timed_out)
		fgp_seterr(err, errlen, "%s %s did not finish within %d s and was killed; make it faster or raise hook_timeout",
		       path, action, timeout_s);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && output != NULL &&
		 strstr(output, "exec failed") != NULL)
		fgp_seterr(err, errlen, "cannot execute %s (missing, not executable, or a bad #! line); check dns_hook",
		       path);
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		fgp_seterr(err, errlen, "%s %s exited with status %d", path, action, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		fgp_seterr(err, errlen, "%s %s was killed by signal %d", path, action, WTERMSIG(status));
	else
		rc = 0;
out:
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	free(envp);
	return rc;
}
