/*
 * devnodes — which device nodes give access to each lent device, by number.
 *
 * A whole GPU is opened through DIR/nvidia<minor>. A MIG instance is reached
 * through its parent's node, which every instance of that GPU shares, so it
 * is its two capability nodes that tell instances apart:
 * DIR/nvidia-caps/nvidia-cap<N> for its GPU instance and for its compute
 * instance, N read from the driver's mig-minors file
 * ("gpu<minor>/gi<GI>/access N", "gpu<minor>/gi<GI>/ci<CI>/access N").
 * The numbers come from stat() of the nodes, so a test points DIR at fake
 * nodes made with mknod.
 */
#ifndef ZGPU_DAEMON_SYS_DEVNODES_H
#define ZGPU_DAEMON_SYS_DEVNODES_H

#include <stddef.h>
#include <sys/types.h>

#include "daemon/core/devices.h"

#define DEVNODES_MAX	    (2 * INV_MAX_DEVICES)
#define DEVNODES_PATH_MAX   256
#define DEVNODES_PER_DEVICE 2

struct devnodes {
	int count; /* distinct nodes: two MIG instances of one GPU instance share its node */
	dev_t dev[DEVNODES_MAX];
	char path[DEVNODES_MAX][DEVNODES_PATH_MAX];
	/* The nodes of inventory device i: indices into dev[], -1 past the last. */
	int of_device[INV_MAX_DEVICES][DEVNODES_PER_DEVICE];
};

/*
 * Finds the nodes of every device in inv under device_dir (MIG minors from
 * the file mig_minors). Returns 0, or -errno with a sentence in err naming
 * the first device whose nodes are missing or are not character devices.
 */
int devnodes_find(struct devnodes *dn, const struct inventory *inv, const char *device_dir,
		  const char *mig_minors, char *err, size_t errlen);

#endif
