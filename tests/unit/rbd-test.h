/*
 * Images on the Ceph cluster of tests/ceph/cluster.sh, for unit tests
 * SPDX-License-Identifier: MIT
 *
 * The cluster script runs a test with CEPH_CONF and STRATA_CEPH_* in the
 * environment (docs/ceph-test-cluster.md); without them, or in a build
 * without librbd, the helpers skip the running test saying why.
 */
#ifndef STRATA_TESTS_RBD_TEST_H
#define STRATA_TESTS_RBD_TEST_H

#include <stdbool.h>
#include <stdint.h>

/* The cluster's pool, or NULL after skipping the running test with the
 * reason (no cluster, no librbd). */
const char *rbd_test_pool(void);

/*
 * Create image @name of @size bytes (zeroes) in the pool, in namespace
 * @ns (created if missing) unless NULL, with a snapshot @snap of its
 * empty state unless NULL.  An image of that name is removed first.
 * Fails the test on error.  Call after rbd_test_pool() returned a pool.
 */
void rbd_test_create(const char *ns, const char *name, uint64_t size,
                     const char *snap);

/* Remove image @name (and its snapshots) of namespace @ns (or NULL);
 * quiet when it does not exist. */
void rbd_test_remove(const char *ns, const char *name);

#endif
