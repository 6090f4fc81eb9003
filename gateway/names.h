/*
 * names: the syntax checks every name in a certificate passes, shared by
 * the daemon (policy decisions, enroll.c) and the signer process (the
 * to-be-signed certificates it is asked to sign, signer.c), so that both
 * sides of the issuance boundary agree on what a valid name is.
 */
#ifndef FG_NAMES_H
#define FG_NAMES_H

#define NAME_CN_MAX 64          /* ub-common-name, RFC 5280 appendix A.1 */

/* A host name as RFC 1123 allows it (LDH labels of 1..63, 253 in all), in
 * lower case; no wildcards. 1 when valid, else 0. */
int name_dns_valid(const char *s);
/* A textual IPv4 or IPv6 address. */
int name_ip_valid(const char *s);
/* local@host: printable ASCII without spaces, one '@', a valid host. */
int name_email_valid(const char *s);
/* A subject CN: at most NAME_CN_MAX bytes, no control characters. */
int name_cn_valid(const char *s);

#endif
