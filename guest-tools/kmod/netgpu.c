// SPDX-License-Identifier: GPL-2.0
/*
 * netgpu: guest driver for the netgpu virtual GPU (a PCI function served by netgpu-vdev).
 *
 * What it owns:
 *  - PCI binding: BAR0 registers, MSI-X (a device-event vector plus one per queue, each
 *    vector with its own context; INTx as fallback), DMA mask, function-level reset.
 *  - /dev/netgpuN: each open file gets its own queue pair. Commands are the device's own
 *    descriptors whose data buffers user space names by virtual address; netgpu_check.h
 *    decides what a descriptor may ask for. Buffers are pinned (writable only where the
 *    device writes, FOLL_LONGTERM, charged to RLIMIT_MEMLOCK), DMA-mapped and rewritten into
 *    guest-physical scatter lists whose entries say whether the device may write them.
 *  - Concurrency: any number of threads submit on one file. A call reserves ring credits,
 *    queues its commands contiguously, and sleeps without holding a lock; completions are
 *    matched to commands by cid (tag + generation), in any order. Blocking calls
 *    (NETGPU_IOC_SUBMIT) and non-blocking ones (NETGPU_IOC_QUEUE, reaped by NETGPU_IOC_WAIT
 *    or noticed with poll) share that path.
 *  - Lifetime (docs/guest-driver.md): one static cdev serves every minor and open() finds
 *    its device in an idr under a mutex, taking a reference there, so neither the cdev nor
 *    the device struct can be freed under an open file. remove() unpublishes the device
 *    first, stops every queue, and then releases every DMA mapping, ring and pinned page
 *    itself: after remove() returns nothing touches the PCI device's DMA state; files held
 *    open only see ENODEV and free host memory when closed.
 *  - Teardown on close: the queue is disabled and the driver waits until the device reports
 *    it stopped touching memory (STATUS.ENABLED clear) before it unpins anything. A queue
 *    that never stops is kept aside (a "stuck" queue: memory and queue index not reused)
 *    until the device lets go of it or the device is removed.
 *  - Reset: reset_prepare() fails every queue (their remote objects die with the reset) and
 *    holds back open() and submissions until reset_done().
 *  - sysfs: the remote GPU's name, memory, executor, link state, queues and pinned pages.
 *
 * The device ABI is docs/device-abi.md; netgpu_abi.h mirrors proto/src/abi.rs and a test
 * checks they agree.
 */

#include <linux/capability.h>
#include <linux/cdev.h>
#include <linux/cred.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/rwsem.h>
#include <linux/scatterlist.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "netgpu_abi.h"
#include "netgpu_check.h"
#include "include/uapi/netgpu.h"

#define DRV_NAME "netgpu"
#define NETGPU_MAX_DEVICES 64
#define NETGPU_READY_TIMEOUT_MS 15000
#define NETGPU_STOP_TIMEOUT_MS 10000
#define NETGPU_POLL_MS 100		/* waiters look at the completion ring this often */
#define NETGPU_CHECK_MS 500		/* and at the device's status registers this often */

#ifndef PCI_IRQ_INTX
#define PCI_IRQ_INTX PCI_IRQ_LEGACY
#endif

static bool msix = true;
module_param(msix, bool, 0444);
MODULE_PARM_DESC(msix, "use MSI-X if the device offers it (default true; false: INTx only)");

static unsigned int queue_size = 256;
module_param(queue_size, uint, 0444);
MODULE_PARM_DESC(queue_size, "entries per queue ring: commands in flight per open file (power of two, 2..4096, default 256)");

static unsigned int max_queues_per_user = 16;
module_param(max_queues_per_user, uint, 0644);
MODULE_PARM_DESC(max_queues_per_user, "open files (queues) one user may hold per device; 0 = no limit (default 16)");

struct netgpu_dev;

/* One user buffer of one command, pinned and DMA-mapped. */
struct netgpu_buf {
	struct page **pages;		/* pinned, npages of them; NULL when not pinned */
	unsigned int npages;
	struct sg_table sgt;
	bool device_writes;
	bool mapped;
};

enum netgpu_cmd_state {
	NETGPU_CMD_NEW,			/* being prepared by its submitter */
	NETGPU_CMD_INFLIGHT,		/* in q->tags: the device owns its memory */
	NETGPU_CMD_DONE,		/* completed: cpl valid */
	NETGPU_CMD_LOST,		/* the queue stopped before it completed */
};

enum netgpu_cmd_owner {
	NETGPU_OWNER_WAITER,		/* a NETGPU_IOC_SUBMIT call waits for it and frees it */
	NETGPU_OWNER_QUEUED,		/* in q->queued until NETGPU_IOC_WAIT reaps it */
	NETGPU_OWNER_ORPHAN,		/* nobody waits: freed once its buffers are released */
};

struct netgpu_cmd {
	struct list_head rnode;		/* q->release_list: finished, buffers still held */
	struct list_head dnode;		/* q->reap_list: QUEUED owner, finished, unreaped */
	u64 seq;
	u32 cid;
	u16 tag;
	u8 state;			/* enum netgpu_cmd_state, under q->lock */
	u8 owner;			/* enum netgpu_cmd_owner, under q->lock */
	bool released;			/* buffers released (set under q->lock and release_mutex) */
	struct netgpu_command desc;	/* as the device gets it */
	struct netgpu_completion cpl;
	struct netgpu_cmd_spec spec;
	struct netgpu_buf bufs[NETGPU_MAX_BUFS];
	struct netgpu_sg_entry *table;	/* indirect table, when more than 3 entries */
	dma_addr_t table_dma;
	size_t table_size;
	struct mm_struct *mm;		/* charged for the pins (mmgrab) */
	unsigned long charged;		/* pages added to mm->pinned_vm */
};

struct netgpu_queue {
	struct netgpu_dev *ndev;	/* holds a reference */
	u16 qid;
	u16 vector;
	u32 size;
	kuid_t uid;
	struct netgpu_command *sq;
	dma_addr_t sq_dma;
	struct netgpu_completion *cq;	/* NULL once the rings are freed */
	dma_addr_t cq_dma;

	struct mutex sq_mutex;		/* sq_tail, next_seq, inserts into queued */
	u32 sq_tail;
	u64 next_seq;

	spinlock_t lock;		/* everything below, and cmd state/owner/lists */
	u32 cq_head;
	u16 phase;
	u32 credits;			/* commands reserved or in flight, <= size */
	struct netgpu_cmd **tags;	/* in-flight commands by tag */
	u16 *gens;			/* generation of each tag */
	u16 *free_tags;
	u32 nfree;
	struct list_head release_list;
	struct list_head reap_list;
	u32 nqueued;			/* entries in queued */
	u64 events;			/* bumped on every completion or failure */
	bool stopped;			/* the device no longer touches rings or buffers */
	bool zombie;			/* file closed, device never confirmed the stop */
	bool leak;			/* removed while running: keep its memory for good */
	unsigned long next_check;	/* jiffies: next status register check */

	struct xarray queued;		/* seq -> QUEUED-owner command, until reaped */
	bool broken;			/* READ_ONCE/WRITE_ONCE: no more submissions */
	wait_queue_head_t wq;
	struct mutex release_mutex;	/* every buffer release, ring free */
	struct work_struct reclaim_work;
};

/* An MSI-X vector's handler context: which device, which vector. */
struct netgpu_vec {
	struct netgpu_dev *nd;
	u16 index;
};

struct netgpu_dev {
	struct pci_dev *pdev;
	void __iomem *regs;
	struct kref ref;
	struct rw_semaphore io_sem;	/* regs and DMA mapping: usable while held and !dead */
	bool dead;			/* written under io_sem held for writing */
	bool removing;			/* READ_ONCE: remove() has begun */
	bool resetting;			/* READ_ONCE: between reset_prepare and reset_done */
	int minor;
	struct device *dev;
	int nvec;
	bool msix;
	struct netgpu_vec vecs[NETGPU_MSIX_VECTORS];
	u32 max_queues;
	u32 version;
	struct netgpu_limits lim;
	struct mutex qmutex;		/* creating, tearing down and freeing queues */
	spinlock_t qlock;		/* queues[] (interrupt handlers read it) */
	struct netgpu_queue *queues[NETGPU_MAX_QUEUES];
	wait_queue_head_t event_wq;
	atomic_long_t pinned;		/* user pages pinned for this device right now */
};

/*
 * One character device for all minors; open() finds the device by minor in netgpu_idr. The
 * cdev is not embedded in struct netgpu_dev on purpose: the VFS keeps a reference to the
 * cdev until after release() returns, which would outlive a device freed by its last close
 * after hot-unplug (what cdev_device_add() solves by tying the device's lifetime to the
 * cdev's). A static cdev lives as long as the module, and the module cannot be unloaded
 * while a file is open (fops owner). Entries are NULL while probe is unfinished and removed
 * first thing in remove(), and open() takes its reference under the idr lock, so open()
 * sees only live devices.
 */
static dev_t netgpu_devt;
static struct cdev netgpu_cdev;
static struct class *netgpu_class;
static DEFINE_IDR(netgpu_idr);
static DEFINE_MUTEX(netgpu_idr_lock);

/* ---------------------------------------------------------------- registers */

/* Register access: callers hold io_sem and have checked !dead. */
static u32 rd32(struct netgpu_dev *nd, u32 off)
{
	return readl(nd->regs + off);
}

static u64 rd64(struct netgpu_dev *nd, u32 off)
{
	return lo_hi_readq(nd->regs + off);
}

static void wr32(struct netgpu_dev *nd, u32 off, u32 v)
{
	writel(v, nd->regs + off);
}

static void wr64(struct netgpu_dev *nd, u32 off, u64 v)
{
	lo_hi_writeq(v, nd->regs + off);
}

/* Copies @len bytes (a multiple of 4) of little-endian register space at @off into @dst. */
static void netgpu_read_bytes(struct netgpu_dev *nd, u32 off, void *dst, size_t len)
{
	size_t i;

	for (i = 0; i < len; i += 4) {
		__le32 v = cpu_to_le32(rd32(nd, off + i));

		memcpy((u8 *)dst + i, &v, sizeof(v));
	}
}

static u32 qreg(u16 qid, u32 field)
{
	return NETGPU_REG_QUEUE_BASE + qid * NETGPU_REG_QUEUE_STRIDE + field;
}

/* A register that reads all ones: the device is gone (surprise removal, dead link). */
static bool netgpu_all_ones(u32 v)
{
	return v == ~0u;
}

/*
 * Does the device still answer? MAGIC reads all ones when it is gone, and zero when its
 * memory decoding is off: either way nothing it says can be trusted. Caller holds io_sem.
 */
static bool netgpu_answers(struct netgpu_dev *nd)
{
	return rd32(nd, NETGPU_REG_MAGIC) == NETGPU_MAGIC;
}

static void netgpu_dev_release(struct kref *ref)
{
	struct netgpu_dev *nd = container_of(ref, struct netgpu_dev, ref);

	pci_dev_put(nd->pdev);
	kfree(nd);
}

static void netgpu_dev_put(struct netgpu_dev *nd)
{
	kref_put(&nd->ref, netgpu_dev_release);
}

/* ---------------------------------------------------------------- pinned buffers */

/* Charges @npages to the caller's RLIMIT_MEMLOCK, as RDMA and vfio do (mm->pinned_vm). */
static int netgpu_charge(struct netgpu_cmd *c, unsigned long npages)
{
	struct mm_struct *mm = current->mm;
	unsigned long limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	s64 now;

	if (!mm)
		return -EFAULT;
	if (!c->mm) {
		mmgrab(mm);
		c->mm = mm;
	}
	if (c->mm != mm)
		return -EFAULT;
	now = atomic64_add_return(npages, &mm->pinned_vm);
	if (now > limit && !capable(CAP_IPC_LOCK)) {
		atomic64_sub(npages, &mm->pinned_vm);
		return -ENOMEM;
	}
	c->charged += npages;
	return 0;
}

static void netgpu_uncharge(struct netgpu_cmd *c)
{
	if (!c->mm)
		return;
	atomic64_sub(c->charged, &c->mm->pinned_vm);
	c->charged = 0;
	mmdrop(c->mm);
	c->mm = NULL;
}

static void netgpu_buf_unpin(struct netgpu_dev *nd, struct netgpu_buf *b)
{
	if (b->sgt.sgl)
		sg_free_table(&b->sgt);
	b->sgt.sgl = NULL;
	if (b->pages) {
		unpin_user_pages_dirty_lock(b->pages, b->npages, b->device_writes);
		atomic_long_sub(b->npages, &nd->pinned);
		kvfree(b->pages);
		b->pages = NULL;
	}
}

/* Pins one buffer: writable only if the device writes it. No device access. */
static int netgpu_buf_pin(struct netgpu_dev *nd, struct netgpu_cmd *c, struct netgpu_buf *b,
			  const struct netgpu_buf_spec *s)
{
	unsigned int gup = FOLL_LONGTERM | (s->device_writes ? FOLL_WRITE : 0);
	unsigned long first, last, npages;
	long pinned;
	int ret;

	b->device_writes = s->device_writes;
	if (s->len == 0)
		return 0;
	if (!access_ok(u64_to_user_ptr(s->uaddr), s->len))
		return -EFAULT;
	first = s->uaddr >> PAGE_SHIFT;
	last = (s->uaddr + s->len - 1) >> PAGE_SHIFT;
	npages = last - first + 1;
	ret = netgpu_charge(c, npages);
	if (ret)
		return ret;
	b->pages = kvmalloc_array(npages, sizeof(*b->pages), GFP_KERNEL_ACCOUNT);
	if (!b->pages)
		return -ENOMEM;
	/*
	 * pin_user_pages_fast may pin fewer pages than asked (a fault that dropped mmap_lock,
	 * e.g. unsharing the zero page of memory never written for a long-term pin): go on
	 * from where it stopped until all are pinned or it fails.
	 */
	pinned = 0;
	while (pinned < npages) {
		long got = pin_user_pages_fast((s->uaddr & PAGE_MASK) + pinned * PAGE_SIZE,
					       npages - pinned, gup, b->pages + pinned);

		if (got <= 0) {
			if (pinned > 0)
				unpin_user_pages(b->pages, pinned);
			kvfree(b->pages);
			b->pages = NULL;
			return got < 0 ? got : -EFAULT;
		}
		pinned += got;
		cond_resched();
	}
	b->npages = npages;
	atomic_long_add(npages, &nd->pinned);
	ret = sg_alloc_table_from_pages(&b->sgt, b->pages, npages, offset_in_page(s->uaddr),
					s->len, GFP_KERNEL_ACCOUNT);
	if (ret) {
		b->sgt.sgl = NULL;
		return ret;
	}
	return 0;
}

static enum dma_data_direction netgpu_dir(const struct netgpu_buf *b)
{
	return b->device_writes ? DMA_FROM_DEVICE : DMA_TO_DEVICE;
}

/* Unmaps a command's DMA (the device no longer touches it). The PCI device is bound. */
static void netgpu_cmd_unmap(struct netgpu_dev *nd, struct netgpu_cmd *c)
{
	unsigned int i;

	for (i = 0; i < c->spec.nbufs; i++) {
		struct netgpu_buf *b = &c->bufs[i];

		if (b->mapped)
			dma_unmap_sgtable(&nd->pdev->dev, &b->sgt, netgpu_dir(b), 0);
		b->mapped = false;
	}
	if (c->table)
		dma_free_coherent(&nd->pdev->dev, c->table_size, c->table, c->table_dma);
	c->table = NULL;
}

/*
 * Releases everything a command holds: DMA mappings, pins, the memlock charge. With @leak
 * (a device removed while it still ran the queue) the pages stay pinned for good: a device
 * that may still write them must not write into memory given to someone else.
 */
static void netgpu_cmd_release(struct netgpu_dev *nd, struct netgpu_cmd *c, bool leak)
{
	unsigned int i;

	netgpu_cmd_unmap(nd, c);
	for (i = 0; i < c->spec.nbufs; i++) {
		if (leak) {
			if (c->bufs[i].sgt.sgl)
				sg_free_table(&c->bufs[i].sgt);
			kvfree(c->bufs[i].pages);	/* the pins themselves stay */
			memset(&c->bufs[i], 0, sizeof(c->bufs[i]));
		}
		netgpu_buf_unpin(nd, &c->bufs[i]);
	}
	netgpu_uncharge(c);
}

/*
 * Maps a pinned command for DMA and rewrites its scatter list. Caller holds io_sem for
 * reading with !dead, so remove() cannot tear the device down meanwhile.
 */
static int netgpu_cmd_map(struct netgpu_dev *nd, struct netgpu_cmd *c)
{
	struct device *dev = &nd->pdev->dev;
	u32 nsegs[NETGPU_MAX_BUFS] = {};
	struct netgpu_sg_plan plan;
	struct scatterlist *sg;
	unsigned int i;
	u32 k = 0;
	int ret, j;

	for (i = 0; i < c->spec.nbufs; i++) {
		struct netgpu_buf *b = &c->bufs[i];

		if (!b->pages)
			continue;
		ret = dma_map_sgtable(dev, &b->sgt, netgpu_dir(b), 0);
		if (ret)
			return ret;
		b->mapped = true;
		nsegs[i] = b->sgt.nents;
	}
	ret = netgpu_sg_plan(&nd->lim, nsegs, c->spec.nbufs, &plan);
	if (ret)
		return ret;
	if (plan.indirect) {
		c->table_size = plan.entries * sizeof(struct netgpu_sg_entry);
		c->table = dma_alloc_coherent(dev, c->table_size, &c->table_dma, GFP_KERNEL);
		if (!c->table)
			return -ENOMEM;
	}
	netgpu_sg_begin(&c->desc);
	for (i = 0; i < c->spec.nbufs; i++) {
		struct netgpu_buf *b = &c->bufs[i];
		u32 flags = netgpu_sg_flags(&nd->lim, b->device_writes);

		if (!b->mapped)
			continue;
		for_each_sgtable_dma_sg(&b->sgt, sg, j) {
			ret = netgpu_sg_put(&c->desc, c->table, &plan, k++, sg_dma_address(sg),
					    sg_dma_len(sg), flags);
			if (ret)
				return ret;
		}
	}
	netgpu_sg_finish(&c->desc, &plan, c->table_dma);
	return 0;
}

static void netgpu_cmd_free(struct netgpu_cmd *c)
{
	kfree(c);
}

/* Copies, checks and pins one user descriptor. No device access. */
static struct netgpu_cmd *netgpu_cmd_prepare(struct netgpu_queue *q,
					     const struct netgpu_ioc_cmd __user *u, u8 owner)
{
	struct netgpu_dev *nd = q->ndev;
	struct netgpu_cmd *c;
	unsigned int i;
	int ret;

	BUILD_BUG_ON(sizeof(c->desc) != sizeof(u->desc));
	c = kzalloc(sizeof(*c), GFP_KERNEL_ACCOUNT);
	if (!c)
		return ERR_PTR(-ENOMEM);
	INIT_LIST_HEAD(&c->rnode);
	INIT_LIST_HEAD(&c->dnode);
	c->owner = owner;
	if (copy_from_user(&c->desc, u->desc, sizeof(c->desc))) {
		ret = -EFAULT;
		goto fail;
	}
	ret = netgpu_check_cmd(&c->desc, &nd->lim, &c->spec);
	if (ret)
		goto fail;
	for (i = 0; i < c->spec.nbufs; i++) {
		ret = netgpu_buf_pin(nd, c, &c->bufs[i], &c->spec.bufs[i]);
		if (ret)
			goto fail;
	}
	return c;
fail:
	netgpu_cmd_release(nd, c, false);
	kfree(c);
	return ERR_PTR(ret);
}

/* ---------------------------------------------------------------- completions */

/*
 * Releases the buffers of finished commands (all of them, or only @only). The device no
 * longer touches them: they completed, or their queue stopped. Sleeps.
 */
static void netgpu_reclaim_locked(struct netgpu_queue *q, struct netgpu_cmd *only)
{
	struct netgpu_cmd *c;
	unsigned long flags;
	bool orphan;

	lockdep_assert_held(&q->release_mutex);
	for (;;) {
		spin_lock_irqsave(&q->lock, flags);
		if (only)
			c = list_empty(&only->rnode) ? NULL : only;
		else
			c = list_first_entry_or_null(&q->release_list, struct netgpu_cmd, rnode);
		if (c)
			list_del_init(&c->rnode);
		spin_unlock_irqrestore(&q->lock, flags);
		if (!c)
			return;
		netgpu_cmd_release(q->ndev, c, q->leak);
		spin_lock_irqsave(&q->lock, flags);
		c->released = true;
		orphan = c->owner == NETGPU_OWNER_ORPHAN;
		spin_unlock_irqrestore(&q->lock, flags);
		if (orphan)
			netgpu_cmd_free(c);
		if (only)
			return;
	}
}

static void netgpu_reclaim(struct netgpu_queue *q, struct netgpu_cmd *only)
{
	mutex_lock(&q->release_mutex);
	netgpu_reclaim_locked(q, only);
	mutex_unlock(&q->release_mutex);
}

static void netgpu_reclaim_work(struct work_struct *w)
{
	netgpu_reclaim(container_of(w, struct netgpu_queue, reclaim_work), NULL);
}

/* A finished command (DONE or LOST) goes to the release list. Caller holds q->lock. */
static void netgpu_cmd_finished(struct netgpu_queue *q, struct netgpu_cmd *c, u8 state)
{
	c->state = state;
	list_add_tail(&c->rnode, &q->release_list);
	if (c->owner == NETGPU_OWNER_QUEUED)
		list_add_tail(&c->dnode, &q->reap_list);
}

/* Consumes new completions; returns true if any arrived. Any context. */
static bool netgpu_process_cq(struct netgpu_queue *q)
{
	bool progress = false, work = false;
	unsigned int bogus = 0;
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	while (q->cq) {
		struct netgpu_completion *e = &q->cq[q->cq_head];
		struct netgpu_completion cpl;
		struct netgpu_cmd *c;
		u16 tag;

		if ((le16_to_cpu(READ_ONCE(e->flags)) & NETGPU_CQE_FLAG_PHASE) != q->phase)
			break;
		dma_rmb();
		cpl = *e;
		q->cq_head = (q->cq_head + 1) % q->size;
		if (q->cq_head == 0)
			q->phase ^= 1;
		progress = true;
		tag = netgpu_cid_tag(le32_to_cpu(cpl.cid));
		c = tag < q->size ? q->tags[tag] : NULL;
		if (!c || c->cid != le32_to_cpu(cpl.cid)) {
			bogus++;
			continue;
		}
		q->tags[tag] = NULL;
		q->free_tags[q->nfree++] = tag;
		q->credits--;
		c->cpl = cpl;
		netgpu_cmd_finished(q, c, NETGPU_CMD_DONE);
		if (c->owner != NETGPU_OWNER_WAITER)
			work = true;
	}
	if (progress)
		q->events++;
	spin_unlock_irqrestore(&q->lock, flags);
	if (bogus)
		dev_warn_ratelimited(&q->ndev->pdev->dev,
				     "queue %u: %u completions for no command in flight\n",
				     q->qid, bogus);
	if (work)
		schedule_work(&q->reclaim_work);
	if (progress)
		wake_up_all(&q->wq);
	return progress;
}

static void netgpu_queue_fail(struct netgpu_queue *q)
{
	unsigned long flags;

	WRITE_ONCE(q->broken, true);
	spin_lock_irqsave(&q->lock, flags);
	q->events++;
	spin_unlock_irqrestore(&q->lock, flags);
	wake_up_all(&q->wq);
}

static void netgpu_fail_all(struct netgpu_dev *nd)
{
	struct netgpu_queue *q;
	unsigned long flags;
	int i;

	spin_lock_irqsave(&nd->qlock, flags);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		q = nd->queues[i];
		if (q)
			netgpu_queue_fail(q);
	}
	spin_unlock_irqrestore(&nd->qlock, flags);
}

static void netgpu_handle_vector(struct netgpu_dev *nd, int vector)
{
	struct netgpu_queue *q;
	int i;

	spin_lock(&nd->qlock);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		q = nd->queues[i];
		if (!q)
			continue;
		if (vector < 0 || q->vector == vector)
			netgpu_process_cq(q);
		/* A device event (status change, e.g. FATAL): let waiters look at once. */
		if (vector <= 0)
			wake_up_all(&q->wq);
	}
	spin_unlock(&nd->qlock);
	if (vector <= 0)
		wake_up_all(&nd->event_wq);
}

static irqreturn_t netgpu_msix_irq(int irq, void *data)
{
	struct netgpu_vec *v = data;

	netgpu_handle_vector(v->nd, v->index);
	return IRQ_HANDLED;
}

static irqreturn_t netgpu_intx_irq(int irq, void *data)
{
	struct netgpu_dev *nd = data;
	u32 cause;

	/* INTR_STATUS is read-to-clear; 0 means the shared line was someone else's. */
	cause = rd32(nd, NETGPU_REG_INTR_STATUS);
	if (!cause || netgpu_all_ones(cause))
		return IRQ_NONE;
	netgpu_handle_vector(nd, -1);
	return IRQ_HANDLED;
}

/* ---------------------------------------------------------------- queues */

/* Is the queue unusable (device error, fatal status, reset, removal)? Sets q->broken. */
static bool netgpu_queue_check(struct netgpu_queue *q, bool force)
{
	struct netgpu_dev *nd = q->ndev;
	bool bad = false;
	u32 qst, st;

	if (READ_ONCE(q->broken))
		return true;
	if (!force && time_before(jiffies, READ_ONCE(q->next_check)))
		return false;
	WRITE_ONCE(q->next_check, jiffies + msecs_to_jiffies(NETGPU_CHECK_MS));
	down_read(&nd->io_sem);
	if (nd->dead || READ_ONCE(nd->resetting)) {
		bad = true;
	} else {
		qst = rd32(nd, qreg(q->qid, NETGPU_QREG_STATUS));
		st = rd32(nd, NETGPU_REG_STATUS);
		bad = netgpu_all_ones(qst) || netgpu_all_ones(st) || !netgpu_answers(nd) ||
		      qst != NETGPU_QSTATUS_ENABLED || (st & NETGPU_STATUS_FATAL);
	}
	up_read(&nd->io_sem);
	if (bad)
		netgpu_queue_fail(q);
	return bad;
}

static int netgpu_broken_errno(struct netgpu_queue *q)
{
	return READ_ONCE(q->ndev->removing) ? -ENODEV : -EIO;
}

/*
 * Disables the queue and waits until the device no longer touches its rings or any buffer.
 * Returns false if the device did not confirm in time: the caller must then keep the memory
 * rather than free it under a device that may still write to it. A removed device has been
 * stopped by remove(): true.
 */
static bool netgpu_queue_stop(struct netgpu_queue *q)
{
	struct netgpu_dev *nd = q->ndev;
	unsigned long deadline = jiffies + msecs_to_jiffies(NETGPU_STOP_TIMEOUT_MS);
	bool written = false;
	u32 st;

	for (;;) {
		down_read(&nd->io_sem);
		if (nd->dead) {
			up_read(&nd->io_sem);
			return true;
		}
		if (!written) {
			wr32(nd, qreg(q->qid, NETGPU_QREG_ENABLE), 0);
			written = true;
		}
		st = rd32(nd, qreg(q->qid, NETGPU_QREG_STATUS));
		if (!netgpu_all_ones(st) && (st & NETGPU_QSTATUS_ENABLED) && !netgpu_answers(nd))
			st = ~0u;	/* not answering: gone, nothing left to wait for */
		up_read(&nd->io_sem);
		if (netgpu_all_ones(st) || !(st & NETGPU_QSTATUS_ENABLED))
			return true;
		if (time_after(jiffies, deadline))
			return false;
		usleep_range(1000, 2000);
	}
}

/*
 * The device has stopped using the queue (or is being removed): every command still in
 * flight is lost, every buffer released, the rings freed. Queue memory that user space may
 * still reap (QUEUED commands) stays. Caller holds nd->qmutex.
 */
static void netgpu_queue_teardown(struct netgpu_queue *q)
{
	struct netgpu_dev *nd = q->ndev;
	struct netgpu_completion *cq;
	unsigned long flags;
	u32 t;

	mutex_lock(&q->release_mutex);
	WRITE_ONCE(q->broken, true);
	spin_lock_irqsave(&q->lock, flags);
	q->stopped = true;
	for (t = 0; t < q->size; t++) {
		struct netgpu_cmd *c = q->tags[t];

		if (!c)
			continue;
		q->tags[t] = NULL;
		netgpu_cmd_finished(q, c, NETGPU_CMD_LOST);
	}
	cq = q->cq;
	q->cq = NULL;
	q->events++;
	spin_unlock_irqrestore(&q->lock, flags);
	netgpu_reclaim_locked(q, NULL);
	if (cq && !q->leak) {
		dma_free_coherent(&nd->pdev->dev, q->size * sizeof(*q->sq), q->sq, q->sq_dma);
		dma_free_coherent(&nd->pdev->dev, q->size * sizeof(*cq), cq, q->cq_dma);
		q->sq = NULL;
	}
	mutex_unlock(&q->release_mutex);
	wake_up_all(&q->wq);
}

static void netgpu_queue_unpublish(struct netgpu_queue *q)
{
	struct netgpu_dev *nd = q->ndev;
	unsigned long flags;

	spin_lock_irqsave(&nd->qlock, flags);
	if (nd->queues[q->qid] == q)
		nd->queues[q->qid] = NULL;
	spin_unlock_irqrestore(&nd->qlock, flags);
}

/* Frees a torn-down, unpublished queue and what user space never reaped. */
static void netgpu_queue_free(struct netgpu_queue *q)
{
	struct netgpu_dev *nd = q->ndev;
	struct netgpu_cmd *c;
	unsigned long idx;

	cancel_work_sync(&q->reclaim_work);
	netgpu_reclaim(q, NULL);
	xa_for_each(&q->queued, idx, c) {
		xa_erase(&q->queued, idx);
		netgpu_cmd_free(c);
	}
	xa_destroy(&q->queued);
	kfree(q->tags);
	kfree(q->gens);
	kfree(q->free_tags);
	kfree(q);
	netgpu_dev_put(nd);
}

/*
 * Looks at stuck queues again: one the device has let go of by now is torn down and its
 * index reused. Caller holds nd->qmutex.
 */
static void netgpu_reap_zombies(struct netgpu_dev *nd)
{
	struct netgpu_queue *q;
	int i;
	u32 st;

	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		q = nd->queues[i];
		if (!q || !q->zombie)
			continue;
		down_read(&nd->io_sem);
		st = nd->dead ? 0 : rd32(nd, qreg(q->qid, NETGPU_QREG_STATUS));
		up_read(&nd->io_sem);
		if (!netgpu_all_ones(st) && (st & NETGPU_QSTATUS_ENABLED))
			continue;
		dev_info(&nd->pdev->dev, "stuck queue %u stopped at last; freeing it\n", q->qid);
		netgpu_queue_teardown(q);
		netgpu_queue_unpublish(q);
		netgpu_queue_free(q);
	}
}

static int netgpu_wait_ready(struct netgpu_dev *nd)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(NETGPU_READY_TIMEOUT_MS);
	u32 st = 0;

	for (;;) {
		down_read(&nd->io_sem);
		if (nd->dead) {
			up_read(&nd->io_sem);
			return -ENODEV;
		}
		if (!READ_ONCE(nd->resetting))
			st = netgpu_answers(nd) ? rd32(nd, NETGPU_REG_STATUS) : ~0u;
		up_read(&nd->io_sem);
		if (!READ_ONCE(nd->resetting)) {
			if (netgpu_all_ones(st))
				return -ENODEV;
			if (st & NETGPU_STATUS_FATAL)
				return -EIO;
			if ((st & NETGPU_STATUS_READY) && !(st & NETGPU_STATUS_RESETTING))
				return 0;
		}
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		if (wait_event_interruptible_timeout(nd->event_wq, READ_ONCE(nd->removing),
						     msecs_to_jiffies(50)) < 0)
			return -ERESTARTSYS;
	}
}

static struct netgpu_queue *netgpu_queue_alloc(struct netgpu_dev *nd)
{
	struct device *dev = &nd->pdev->dev;
	struct netgpu_queue *q;
	u32 i;

	q = kzalloc(sizeof(*q), GFP_KERNEL_ACCOUNT);
	if (!q)
		return NULL;
	q->ndev = nd;
	q->size = queue_size;
	q->phase = 1;
	q->uid = current_uid();
	mutex_init(&q->sq_mutex);
	spin_lock_init(&q->lock);
	mutex_init(&q->release_mutex);
	init_waitqueue_head(&q->wq);
	INIT_LIST_HEAD(&q->release_list);
	INIT_LIST_HEAD(&q->reap_list);
	xa_init(&q->queued);
	INIT_WORK(&q->reclaim_work, netgpu_reclaim_work);
	q->tags = kcalloc(q->size, sizeof(*q->tags), GFP_KERNEL_ACCOUNT);
	q->gens = kcalloc(q->size, sizeof(*q->gens), GFP_KERNEL_ACCOUNT);
	q->free_tags = kcalloc(q->size, sizeof(*q->free_tags), GFP_KERNEL_ACCOUNT);
	q->sq = dma_alloc_coherent(dev, q->size * sizeof(*q->sq), &q->sq_dma, GFP_KERNEL);
	q->cq = dma_alloc_coherent(dev, q->size * sizeof(*q->cq), &q->cq_dma, GFP_KERNEL);
	if (!q->tags || !q->gens || !q->free_tags || !q->sq || !q->cq) {
		if (q->sq)
			dma_free_coherent(dev, q->size * sizeof(*q->sq), q->sq, q->sq_dma);
		if (q->cq)
			dma_free_coherent(dev, q->size * sizeof(*q->cq), q->cq, q->cq_dma);
		kfree(q->tags);
		kfree(q->gens);
		kfree(q->free_tags);
		kfree(q);
		return NULL;
	}
	for (i = 0; i < q->size; i++)
		q->free_tags[i] = q->size - 1 - i;
	q->nfree = q->size;
	return q;
}

static void netgpu_queue_free_unused(struct netgpu_queue *q)
{
	struct device *dev = &q->ndev->pdev->dev;

	if (q->leak) {
		dev_err(dev, "queue %u refused but kept running; its rings are kept\n", q->qid);
	} else {
		dma_free_coherent(dev, q->size * sizeof(*q->sq), q->sq, q->sq_dma);
		dma_free_coherent(dev, q->size * sizeof(*q->cq), q->cq, q->cq_dma);
	}
	kfree(q->tags);
	kfree(q->gens);
	kfree(q->free_tags);
	kfree(q);
}

/*
 * After a refused enable: has the device let go of index @qid (so its rings may be freed)?
 * Caller holds io_sem.
 */
static bool netgpu_index_stopped(struct netgpu_dev *nd, u16 qid)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(NETGPU_STOP_TIMEOUT_MS);
	u32 st;

	while ((st = rd32(nd, qreg(qid, NETGPU_QREG_STATUS))) != ~0u &&
	       (st & NETGPU_QSTATUS_ENABLED)) {
		if (time_after(jiffies, deadline))
			return false;
		usleep_range(1000, 2000);
	}
	return true;
}

/* Programs and enables queue @qid for @q; 0, or why the device refused. */
static int netgpu_queue_enable(struct netgpu_dev *nd, struct netgpu_queue *q, u16 qid)
{
	u32 st;

	if (nd->dead || !netgpu_answers(nd))
		return -ENODEV;
	st = rd32(nd, qreg(qid, NETGPU_QREG_STATUS));
	if (netgpu_all_ones(st))
		return -ENODEV;
	if (st & NETGPU_QSTATUS_ENABLED)
		return -EBUSY;		/* the device still serves the index's previous use */
	q->qid = qid;
	q->vector = nd->msix ? 1 + (qid % (nd->nvec - 1)) : 1 + qid;
	wr64(nd, qreg(qid, NETGPU_QREG_SQ_BASE), q->sq_dma);
	wr64(nd, qreg(qid, NETGPU_QREG_CQ_BASE), q->cq_dma);
	wr32(nd, qreg(qid, NETGPU_QREG_SIZE), q->size);
	wr32(nd, qreg(qid, NETGPU_QREG_MSIX_VECTOR), q->vector);
	if (nd->lim.features & NETGPU_FEATURE_INTR_COALESCING) {
		wr32(nd, qreg(qid, NETGPU_QREG_COALESCE_USECS), 0);
		wr32(nd, qreg(qid, NETGPU_QREG_COALESCE_COUNT), 0);
	}
	/* A device that refused the writes (index still busy) must not get our rings. */
	if (rd64(nd, qreg(qid, NETGPU_QREG_SQ_BASE)) != q->sq_dma ||
	    rd64(nd, qreg(qid, NETGPU_QREG_CQ_BASE)) != q->cq_dma)
		return -EBUSY;
	wr32(nd, qreg(qid, NETGPU_QREG_ENABLE), 1);
	st = rd32(nd, qreg(qid, NETGPU_QREG_STATUS));
	if (st != NETGPU_QSTATUS_ENABLED) {
		u32 err = rd32(nd, qreg(qid, NETGPU_QREG_ERROR));

		wr32(nd, qreg(qid, NETGPU_QREG_ENABLE), 0);
		if (err == NETGPU_QERR_BUSY)
			return -EBUSY;	/* still stopping its previous use: try another index */
		dev_warn(&nd->pdev->dev, "queue %u refused: status %#x error %u\n", qid, st, err);
		if (!netgpu_index_stopped(nd, qid))
			q->leak = true;		/* it may still use our rings: never free them */
		return -EIO;
	}
	q->next_check = jiffies + msecs_to_jiffies(NETGPU_CHECK_MS);
	return 0;
}

/* Creates and enables a queue for the calling process. Caller holds nd->qmutex. */
static struct netgpu_queue *netgpu_queue_create(struct netgpu_dev *nd)
{
	struct netgpu_queue *q, *p;
	kuid_t uid = current_uid();
	unsigned long flags;
	unsigned int mine = 0, limit = READ_ONCE(max_queues_per_user);
	int i, ret = -EBUSY;

	netgpu_reap_zombies(nd);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		p = nd->queues[i];
		if (p && !p->zombie && uid_eq(p->uid, uid))
			mine++;
	}
	if (limit && mine >= limit)
		return ERR_PTR(-EDQUOT);
	q = netgpu_queue_alloc(nd);
	if (!q)
		return ERR_PTR(-ENOMEM);
	down_read(&nd->io_sem);
	for (i = 0; i < nd->max_queues && !READ_ONCE(nd->resetting); i++) {
		if (nd->queues[i])
			continue;
		ret = netgpu_queue_enable(nd, q, i);
		if (ret != -EBUSY)
			break;
	}
	if (READ_ONCE(nd->resetting))
		ret = -EAGAIN;		/* open() waits for the reset to finish and tries again */
	if (!ret) {
		kref_get(&nd->ref);
		spin_lock_irqsave(&nd->qlock, flags);
		nd->queues[q->qid] = q;
		spin_unlock_irqrestore(&nd->qlock, flags);
	}
	up_read(&nd->io_sem);
	if (ret) {
		netgpu_queue_free_unused(q);
		return ERR_PTR(ret);
	}
	return q;
}

/* ---------------------------------------------------------------- submission */

static bool netgpu_reserve(struct netgpu_queue *q, u32 n, bool *reserved)
{
	unsigned long flags;

	if (*reserved || READ_ONCE(q->broken))
		return true;
	spin_lock_irqsave(&q->lock, flags);
	if (q->credits + n <= q->size) {
		q->credits += n;
		*reserved = true;
	}
	spin_unlock_irqrestore(&q->lock, flags);
	return *reserved;
}

static void netgpu_unreserve(struct netgpu_queue *q, u32 n)
{
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	q->credits -= n;
	spin_unlock_irqrestore(&q->lock, flags);
	wake_up_all(&q->wq);
}

/*
 * Queues @n prepared commands, contiguously and in order. On success the commands are in
 * flight (the device owns their memory) and *first_seq is the first one's sequence number;
 * on failure none is, and the caller still owns them all.
 */
static int netgpu_enqueue(struct netgpu_queue *q, struct netgpu_cmd **cmds, u32 n,
			  u64 *first_seq)
{
	struct netgpu_dev *nd = q->ndev;
	bool reserved = false;
	unsigned long flags;
	u32 i, done = 0;
	int ret;

	if (wait_event_killable(q->wq, netgpu_reserve(q, n, &reserved)))
		return -EINTR;
	if (!reserved)
		return netgpu_broken_errno(q);
	down_read(&nd->io_sem);
	if (nd->dead || READ_ONCE(q->broken) || READ_ONCE(nd->resetting)) {
		ret = nd->dead ? -ENODEV : -EIO;
		goto unlock;
	}
	for (i = 0; i < n; i++) {
		ret = netgpu_cmd_map(nd, cmds[i]);
		if (ret)
			goto unmap;
	}
	mutex_lock(&q->sq_mutex);
	for (done = 0; done < n; done++) {
		if (cmds[done]->owner != NETGPU_OWNER_QUEUED) {
			cmds[done]->seq = q->next_seq + done;
			continue;
		}
		cmds[done]->seq = q->next_seq + done;
		ret = xa_insert(&q->queued, (unsigned long)cmds[done]->seq, cmds[done],
				GFP_KERNEL_ACCOUNT);
		if (ret) {
			ret = ret == -EBUSY ? -EAGAIN : ret;
			goto unqueue;
		}
	}
	spin_lock_irqsave(&q->lock, flags);
	if (READ_ONCE(q->broken) || !q->cq) {
		spin_unlock_irqrestore(&q->lock, flags);
		ret = -EIO;
		goto unqueue;
	}
	if (q->nqueued + n > NETGPU_MAX_QUEUED && cmds[0]->owner == NETGPU_OWNER_QUEUED) {
		spin_unlock_irqrestore(&q->lock, flags);
		ret = -EAGAIN;
		goto unqueue;
	}
	for (i = 0; i < n; i++) {
		struct netgpu_cmd *c = cmds[i];

		c->tag = q->free_tags[--q->nfree];
		c->cid = netgpu_cid_make(c->tag, ++q->gens[c->tag]);
		c->desc.cid = cpu_to_le32(c->cid);
		c->state = NETGPU_CMD_INFLIGHT;
		q->tags[c->tag] = c;
		if (c->owner == NETGPU_OWNER_QUEUED)
			q->nqueued++;
		q->sq[(q->sq_tail + i) % q->size] = c->desc;
	}
	spin_unlock_irqrestore(&q->lock, flags);
	q->sq_tail = (q->sq_tail + n) % q->size;
	*first_seq = q->next_seq;
	q->next_seq += n;
	/* writel orders the descriptor stores above before the doorbell. */
	wr32(nd, NETGPU_REG_DOORBELL_BASE + q->qid * NETGPU_REG_DOORBELL_STRIDE, q->sq_tail);
	mutex_unlock(&q->sq_mutex);
	up_read(&nd->io_sem);
	return 0;
unqueue:
	for (i = 0; i < done; i++)
		if (cmds[i]->owner == NETGPU_OWNER_QUEUED)
			xa_erase(&q->queued, (unsigned long)cmds[i]->seq);
	mutex_unlock(&q->sq_mutex);
unmap:
	for (i = 0; i < n; i++)
		netgpu_cmd_unmap(nd, cmds[i]);
unlock:
	up_read(&nd->io_sem);
	netgpu_unreserve(q, n);
	return ret;
}

static void netgpu_cmds_free(struct netgpu_queue *q, struct netgpu_cmd **cmds, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (IS_ERR_OR_NULL(cmds[i]))
			continue;
		netgpu_cmd_release(q->ndev, cmds[i], false);
		netgpu_cmd_free(cmds[i]);
	}
}

/* Prepares a user batch; on failure frees what it prepared. */
static int netgpu_prepare_batch(struct netgpu_queue *q, u64 ucmds, u32 count, u8 owner,
				struct netgpu_cmd ***out)
{
	const struct netgpu_ioc_cmd __user *u = u64_to_user_ptr(ucmds);
	struct netgpu_cmd **cmds;
	u32 i;

	if (count == 0 || count > NETGPU_MAX_BATCH || count > q->size)
		return -EINVAL;
	cmds = kcalloc(count, sizeof(*cmds), GFP_KERNEL);
	if (!cmds)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		cmds[i] = netgpu_cmd_prepare(q, &u[i], owner);
		if (IS_ERR(cmds[i])) {
			int ret = PTR_ERR(cmds[i]);

			cmds[i] = NULL;
			netgpu_cmds_free(q, cmds, i);
			kfree(cmds);
			return ret;
		}
	}
	*out = cmds;
	return 0;
}

/*
 * A SUBMIT caller gives up on its commands (fatal signal, failed queue): those already done
 * are released and freed here, the others become orphans the queue frees later.
 */
static void netgpu_abandon(struct netgpu_queue *q, struct netgpu_cmd **cmds, u32 n)
{
	unsigned long flags;
	u32 i;

	for (i = 0; i < n; i++) {
		bool mine;

		spin_lock_irqsave(&q->lock, flags);
		mine = cmds[i]->state == NETGPU_CMD_DONE || cmds[i]->state == NETGPU_CMD_LOST;
		if (!mine)
			cmds[i]->owner = NETGPU_OWNER_ORPHAN;
		spin_unlock_irqrestore(&q->lock, flags);
		if (mine) {
			netgpu_reclaim(q, cmds[i]);
			netgpu_cmd_free(cmds[i]);
		}
	}
}

static bool netgpu_all_done(struct netgpu_cmd **cmds, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		if (READ_ONCE(cmds[i]->state) != NETGPU_CMD_DONE)
			return false;
	return true;
}

static long netgpu_submit(struct netgpu_queue *q, struct netgpu_ioc_submit __user *uarg)
{
	struct netgpu_ioc_submit req;
	struct netgpu_ioc_cmd __user *ucmds;
	struct netgpu_cmd **cmds;
	long ret = 0;
	u64 seq;
	u32 i;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.flags)
		return -EINVAL;
	if (READ_ONCE(q->broken))
		return netgpu_broken_errno(q);
	ret = netgpu_prepare_batch(q, req.cmds, req.count, NETGPU_OWNER_WAITER, &cmds);
	if (ret)
		return ret;
	ret = netgpu_enqueue(q, cmds, req.count, &seq);
	if (ret) {
		netgpu_cmds_free(q, cmds, req.count);
		kfree(cmds);
		return ret;
	}
	/*
	 * Wait for every completion, holding no lock. Interrupts wake us; the periodic poll
	 * also catches a lost interrupt and notices a device error. Only a fatal signal ends
	 * the wait early (the process is dying): an ordinary signal cannot, because restarting
	 * the call would submit the batch twice.
	 */
	for (;;) {
		long w = wait_event_killable_timeout(q->wq,
						     netgpu_all_done(cmds, req.count) ||
						     READ_ONCE(q->broken),
						     msecs_to_jiffies(NETGPU_POLL_MS));
		if (w < 0) {
			netgpu_abandon(q, cmds, req.count);
			kfree(cmds);
			return -EINTR;
		}
		if (netgpu_all_done(cmds, req.count))
			break;
		if (netgpu_process_cq(q))
			continue;
		if (netgpu_queue_check(q, false)) {
			netgpu_process_cq(q);
			if (netgpu_all_done(cmds, req.count))
				break;
			netgpu_abandon(q, cmds, req.count);
			kfree(cmds);
			return netgpu_broken_errno(q);
		}
	}
	ucmds = u64_to_user_ptr(req.cmds);
	for (i = 0; i < req.count; i++) {
		struct netgpu_completion cpl;

		netgpu_reclaim(q, cmds[i]);	/* also orders the read of cpl after DONE */
		cpl = cmds[i]->cpl;
		cpl.cid = cpu_to_le32(i);
		if (copy_to_user(ucmds[i].cpl, &cpl, sizeof(cpl)))
			ret = -EFAULT;
		netgpu_cmd_free(cmds[i]);
	}
	kfree(cmds);
	return ret;
}

static long netgpu_queue_ioctl(struct netgpu_queue *q, struct netgpu_ioc_queue __user *uarg)
{
	struct netgpu_ioc_queue req;
	struct netgpu_cmd **cmds;
	unsigned long flags;
	u64 seq;
	long ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.flags)
		return -EINVAL;
	if (READ_ONCE(q->broken))
		return netgpu_broken_errno(q);
	spin_lock_irqsave(&q->lock, flags);
	ret = q->nqueued + req.count > NETGPU_MAX_QUEUED ? -EAGAIN : 0;
	spin_unlock_irqrestore(&q->lock, flags);
	if (ret)
		return ret;
	ret = netgpu_prepare_batch(q, req.cmds, req.count, NETGPU_OWNER_QUEUED, &cmds);
	if (ret)
		return ret;
	ret = netgpu_enqueue(q, cmds, req.count, &seq);
	if (ret) {
		netgpu_cmds_free(q, cmds, req.count);
		kfree(cmds);
		return ret;
	}
	kfree(cmds);		/* the queue owns the commands now */
	if (put_user(seq, &uarg->seq))
		return -EFAULT;
	return 0;
}

/* ---------------------------------------------------------------- reaping */

struct netgpu_reap_ctx {
	struct netgpu_ioc_reap *r;
	struct netgpu_cmd **take;	/* commands to reap, by entry */
	u32 count;
	u32 flags;
};

/*
 * Looks at the listed commands (or the completed ones, COLLECT) under q->lock; if the wait
 * is over, takes them out of the queue's books into ctx->take and returns the number of
 * entries no longer pending; else returns 0 and changes nothing.
 */
static u32 netgpu_reap_scan(struct netgpu_queue *q, struct netgpu_reap_ctx *ctx)
{
	bool broken = READ_ONCE(q->broken);
	u32 i, finished = 0;

	lockdep_assert_held(&q->lock);
	if (ctx->flags & NETGPU_WAIT_COLLECT) {
		struct netgpu_cmd *c;
		unsigned long idx;

		list_for_each_entry(c, &q->reap_list, dnode) {
			if (finished == ctx->count)
				break;
			ctx->take[finished++] = c;
		}
		if (broken && finished < ctx->count) {
			xa_for_each(&q->queued, idx, c) {
				if (finished == ctx->count)
					break;
				if (c->state == NETGPU_CMD_INFLIGHT)
					ctx->take[finished++] = c;
			}
		}
	} else {
		for (i = 0; i < ctx->count; i++) {
			struct netgpu_cmd *c = xa_load(&q->queued, (unsigned long)ctx->r[i].seq);
			u32 j;

			ctx->take[i] = NULL;
			if (!c || c->seq != ctx->r[i].seq) {
				finished++;
				continue;
			}
			for (j = 0; j < i; j++)		/* listed twice: the first entry reaps */
				if (ctx->take[j] == c)
					break;
			if (j < i) {
				finished++;
				continue;
			}
			if (c->state == NETGPU_CMD_NEW ||	/* its QUEUE call is not done */
			    (c->state == NETGPU_CMD_INFLIGHT && !broken))
				continue;
			ctx->take[i] = c;
			finished++;
		}
		if (finished == 0 || (!(ctx->flags & NETGPU_WAIT_ANY) && finished < ctx->count))
			return 0;
	}
	if (finished == 0)
		return 0;
	for (i = 0; i < ctx->count; i++) {
		struct netgpu_cmd *c = ctx->take[i];

		if ((ctx->flags & NETGPU_WAIT_COLLECT) && i >= finished)
			break;
		if (!c)
			continue;
		xa_erase(&q->queued, (unsigned long)c->seq);
		q->nqueued--;
		if (!list_empty(&c->dnode))
			list_del_init(&c->dnode);
		if (c->state == NETGPU_CMD_INFLIGHT)
			c->owner = NETGPU_OWNER_ORPHAN;	/* lost; the teardown frees it */
	}
	return finished;
}

static long netgpu_wait(struct netgpu_queue *q, struct netgpu_ioc_wait __user *uarg)
{
	struct netgpu_ioc_wait req;
	struct netgpu_reap_ctx ctx = {};
	struct netgpu_ioc_reap __user *ur;
	unsigned long flags, deadline = 0;
	bool forever;
	long slice;
	long ret = 0;
	u32 i, finished;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.reserved || req.count == 0 || req.count > NETGPU_MAX_WAIT ||
	    (req.flags & ~(NETGPU_WAIT_ANY | NETGPU_WAIT_COLLECT)) ||
	    req.flags == (NETGPU_WAIT_ANY | NETGPU_WAIT_COLLECT))
		return -EINVAL;
	ur = u64_to_user_ptr(req.reaps);
	ctx.count = req.count;
	ctx.flags = req.flags;
	ctx.r = kcalloc(req.count, sizeof(*ctx.r), GFP_KERNEL);
	ctx.take = kcalloc(req.count, sizeof(*ctx.take), GFP_KERNEL);
	if (!ctx.r || !ctx.take) {
		ret = -ENOMEM;
		goto out;
	}
	if (copy_from_user(ctx.r, ur, req.count * sizeof(*ctx.r))) {
		ret = -EFAULT;
		goto out;
	}
	for (i = 0; i < req.count; i++) {
		if (ctx.r[i].reserved) {
			ret = -EINVAL;
			goto out;
		}
	}
	forever = req.timeout_ns < 0;
	if (!forever)
		deadline = jiffies + nsecs_to_jiffies(req.timeout_ns);
	for (;;) {
		u64 ev;

		netgpu_process_cq(q);
		netgpu_queue_check(q, false);
		spin_lock_irqsave(&q->lock, flags);
		ev = q->events;
		finished = netgpu_reap_scan(q, &ctx);
		spin_unlock_irqrestore(&q->lock, flags);
		if (finished)
			break;
		if (!forever && !time_before(jiffies, deadline)) {
			ret = -ETIMEDOUT;
			goto out;
		}
		slice = msecs_to_jiffies(NETGPU_POLL_MS);
		if (!forever)
			slice = min_t(long, slice, (long)(deadline - jiffies));
		ret = wait_event_interruptible_timeout(q->wq, READ_ONCE(q->events) != ev,
						       max_t(long, slice, 1));
		if (ret < 0) {
			ret = -EINTR;
			goto out;
		}
		ret = 0;
	}
	/* The taken commands are ours now: release and report them. */
	for (i = 0; i < req.count; i++) {
		struct netgpu_cmd *c = ctx.take[i];
		struct netgpu_ioc_reap *r = &ctx.r[i];

		if ((req.flags & NETGPU_WAIT_COLLECT) && i >= finished) {
			r->state = NETGPU_REAP_PENDING;
			continue;
		}
		if (!c) {
			struct netgpu_cmd *p;

			/* Still pending (ANY), or unknown. */
			spin_lock_irqsave(&q->lock, flags);
			p = xa_load(&q->queued, (unsigned long)r->seq);
			r->state = p && p->seq == r->seq ? NETGPU_REAP_PENDING :
							   NETGPU_REAP_UNKNOWN;
			spin_unlock_irqrestore(&q->lock, flags);
			continue;
		}
		r->seq = c->seq;
		memset(r->cpl, 0, sizeof(r->cpl));
		if (c->state == NETGPU_CMD_DONE) {
			struct netgpu_completion cpl = c->cpl;

			cpl.cid = cpu_to_le32((u32)c->seq);
			memcpy(r->cpl, &cpl, sizeof(cpl));
			r->state = NETGPU_REAP_DONE;
		} else {
			r->state = NETGPU_REAP_LOST;
		}
		if (c->owner != NETGPU_OWNER_ORPHAN) {
			netgpu_reclaim(q, c);
			netgpu_cmd_free(c);
		}
	}
	if (copy_to_user(ur, ctx.r, req.count * sizeof(*ctx.r)) ||
	    put_user(finished, &uarg->done))
		ret = -EFAULT;
out:
	kfree(ctx.r);
	kfree(ctx.take);
	return ret;
}

static __poll_t netgpu_poll(struct file *file, poll_table *wait)
{
	struct netgpu_queue *q = file->private_data;
	unsigned long flags;
	__poll_t mask = 0;

	poll_wait(file, &q->wq, wait);
	netgpu_process_cq(q);
	spin_lock_irqsave(&q->lock, flags);
	if (!list_empty(&q->reap_list))
		mask |= EPOLLIN | EPOLLRDNORM;
	spin_unlock_irqrestore(&q->lock, flags);
	if (READ_ONCE(q->broken))
		mask |= EPOLLERR;
	return mask;
}

/* ---------------------------------------------------------------- info */

static long netgpu_info(struct netgpu_queue *q, void __user *uarg)
{
	struct netgpu_dev *nd = q->ndev;
	struct netgpu_ioc_info info = {};

	info.uapi_version = NETGPU_UAPI_VERSION;
	info.queue = q->qid;
	info.features = (u32)nd->lim.features;
	down_read(&nd->io_sem);
	if (nd->dead) {
		up_read(&nd->io_sem);
		return -ENODEV;
	}
	info.abi_version = rd32(nd, NETGPU_REG_VERSION);
	info.status = rd32(nd, NETGPU_REG_STATUS);
	info.fatal_reason = rd32(nd, NETGPU_REG_FATAL_REASON);
	info.executor = rd32(nd, NETGPU_REG_GPU_EXECUTOR);
	info.compute_capability = rd32(nd, NETGPU_REG_GPU_COMPUTE_CAPABILITY);
	info.sm_count = rd32(nd, NETGPU_REG_GPU_SM_COUNT);
	info.driver_version = rd32(nd, NETGPU_REG_GPU_DRIVER_VERSION);
	info.total_mem = rd64(nd, NETGPU_REG_GPU_TOTAL_MEM);
	info.memory_quota = rd64(nd, NETGPU_REG_MEMORY_QUOTA);
	netgpu_read_bytes(nd, NETGPU_REG_GPU_UUID, info.uuid, sizeof(info.uuid));
	netgpu_read_bytes(nd, NETGPU_REG_GPU_NAME, info.name, NETGPU_GPU_NAME_LEN);
	up_read(&nd->io_sem);
	info.name[sizeof(info.name) - 1] = 0;
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

/* ---------------------------------------------------------------- file operations */

/* Closes a queue whose file is gone (or never was handed out). */
static void netgpu_queue_close(struct netgpu_queue *q)
{
	struct netgpu_dev *nd = q->ndev;
	struct netgpu_cmd *c;
	unsigned long idx, flags;
	bool stopped;

	WRITE_ONCE(q->broken, true);
	stopped = netgpu_queue_stop(q);
	mutex_lock(&nd->qmutex);
	if (stopped) {
		netgpu_queue_teardown(q);
		netgpu_queue_unpublish(q);
		mutex_unlock(&nd->qmutex);
		netgpu_queue_free(q);
		return;
	}
	/*
	 * The device did not let go of the queue: keep its index, rings and the buffers of
	 * commands in flight (they may still be written) as a stuck queue; everything the
	 * device is done with goes now.
	 */
	dev_err(&nd->pdev->dev, "queue %u did not stop; keeping its memory until it does\n",
		q->qid);
	spin_lock_irqsave(&q->lock, flags);
	q->zombie = true;
	xa_for_each(&q->queued, idx, c) {
		xa_erase(&q->queued, idx);
		if (!list_empty(&c->dnode))
			list_del_init(&c->dnode);
		c->owner = NETGPU_OWNER_ORPHAN;
		if (c->released)	/* done and released: nobody else refers to it */
			netgpu_cmd_free(c);
	}
	q->nqueued = 0;
	spin_unlock_irqrestore(&q->lock, flags);
	netgpu_reclaim(q, NULL);
	mutex_unlock(&nd->qmutex);
}

static int netgpu_open(struct inode *inode, struct file *file)
{
	struct netgpu_dev *nd;
	struct netgpu_queue *q;
	int ret, tries;

	mutex_lock(&netgpu_idr_lock);
	nd = idr_find(&netgpu_idr, iminor(inode));
	if (nd)
		kref_get(&nd->ref);
	mutex_unlock(&netgpu_idr_lock);
	if (!nd)
		return -ENODEV;
	for (tries = 0;; tries++) {
		ret = netgpu_wait_ready(nd);
		if (ret)
			goto put;
		mutex_lock(&nd->qmutex);
		q = READ_ONCE(nd->removing) ? ERR_PTR(-ENODEV) : netgpu_queue_create(nd);
		mutex_unlock(&nd->qmutex);
		if (!IS_ERR(q) && READ_ONCE(q->broken) && READ_ONCE(nd->resetting) && tries < 3) {
			/* A reset began right after the queue was made: make another. */
			netgpu_queue_close(q);
			continue;
		}
		if (PTR_ERR_OR_ZERO(q) == -EAGAIN && tries < 3)
			continue;
		break;
	}
	if (IS_ERR(q)) {
		ret = PTR_ERR(q);
		goto put;
	}
	file->private_data = q;
	ret = 0;
put:
	netgpu_dev_put(nd);	/* the queue holds its own reference */
	return ret;
}

static int netgpu_release(struct inode *inode, struct file *file)
{
	netgpu_queue_close(file->private_data);
	return 0;
}

static long netgpu_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct netgpu_queue *q = file->private_data;

	switch (cmd) {
	case NETGPU_IOC_SUBMIT:
		return netgpu_submit(q, (void __user *)arg);
	case NETGPU_IOC_QUEUE:
		return netgpu_queue_ioctl(q, (void __user *)arg);
	case NETGPU_IOC_WAIT:
		return netgpu_wait(q, (void __user *)arg);
	case NETGPU_IOC_INFO:
		return netgpu_info(q, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations netgpu_fops = {
	.owner = THIS_MODULE,
	.open = netgpu_open,
	.release = netgpu_release,
	.unlocked_ioctl = netgpu_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.poll = netgpu_poll,
	.llseek = noop_llseek,
};

/* ---------------------------------------------------------------- sysfs */

static struct netgpu_dev *to_ndev(struct device *dev)
{
	return dev_get_drvdata(dev);
}

static ssize_t gpu_name_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct netgpu_dev *nd = to_ndev(dev);
	char name[NETGPU_GPU_NAME_LEN + 1] = {};

	down_read(&nd->io_sem);
	if (!nd->dead)
		netgpu_read_bytes(nd, NETGPU_REG_GPU_NAME, name, NETGPU_GPU_NAME_LEN);
	up_read(&nd->io_sem);
	return sysfs_emit(buf, "%s\n", name);
}
static DEVICE_ATTR_RO(gpu_name);

#define NETGPU_REG_ATTR(attr_name, fmt, ...)						\
static ssize_t attr_name##_show(struct device *dev, struct device_attribute *attr,	\
				char *buf)						\
{											\
	struct netgpu_dev *nd = to_ndev(dev);						\
	ssize_t n = -ENODEV;								\
	down_read(&nd->io_sem);								\
	if (!nd->dead)									\
		n = sysfs_emit(buf, fmt "\n", __VA_ARGS__);				\
	up_read(&nd->io_sem);								\
	return n;									\
}											\
static DEVICE_ATTR_RO(attr_name)

NETGPU_REG_ATTR(total_mem, "%llu", rd64(nd, NETGPU_REG_GPU_TOTAL_MEM));
NETGPU_REG_ATTR(memory_quota, "%llu", rd64(nd, NETGPU_REG_MEMORY_QUOTA));
NETGPU_REG_ATTR(sm_count, "%u", rd32(nd, NETGPU_REG_GPU_SM_COUNT));
NETGPU_REG_ATTR(driver_version, "%u", rd32(nd, NETGPU_REG_GPU_DRIVER_VERSION));
NETGPU_REG_ATTR(compute_capability, "%u.%u", rd32(nd, NETGPU_REG_GPU_COMPUTE_CAPABILITY) >> 16,
		rd32(nd, NETGPU_REG_GPU_COMPUTE_CAPABILITY) & 0xffff);
NETGPU_REG_ATTR(abi_version, "%u.%u", rd32(nd, NETGPU_REG_VERSION) >> 16,
		rd32(nd, NETGPU_REG_VERSION) & 0xffff);

static ssize_t executor_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	static const char *const names[] = { "none", "cuda", "cpu" };
	struct netgpu_dev *nd = to_ndev(dev);
	u32 e = 0;

	down_read(&nd->io_sem);
	if (!nd->dead)
		e = rd32(nd, NETGPU_REG_GPU_EXECUTOR);
	up_read(&nd->io_sem);
	return sysfs_emit(buf, "%s\n", e < ARRAY_SIZE(names) ? names[e] : "unknown");
}
static DEVICE_ATTR_RO(executor);

static ssize_t link_state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	static const char *const reasons[] = { "internal", "backend unreachable",
		"backend refused the credentials", "backend session lost", "incompatible backend",
		"internal" };
	struct netgpu_dev *nd = to_ndev(dev);
	u32 st, why = 0;

	down_read(&nd->io_sem);
	if (nd->dead) {
		up_read(&nd->io_sem);
		return sysfs_emit(buf, "removed\n");
	}
	if (READ_ONCE(nd->resetting)) {
		up_read(&nd->io_sem);
		return sysfs_emit(buf, "resetting\n");
	}
	st = netgpu_answers(nd) ? rd32(nd, NETGPU_REG_STATUS) : ~0u;
	if (!netgpu_all_ones(st) && (st & NETGPU_STATUS_FATAL))
		why = rd32(nd, NETGPU_REG_FATAL_REASON);
	up_read(&nd->io_sem);
	if (netgpu_all_ones(st))
		return sysfs_emit(buf, "gone\n");	/* not answering */
	if (st & NETGPU_STATUS_FATAL)
		return sysfs_emit(buf, "fatal: %s\n", reasons[why < ARRAY_SIZE(reasons) ? why : 0]);
	if (st & NETGPU_STATUS_RESETTING)
		return sysfs_emit(buf, "resetting\n");
	if (st & NETGPU_STATUS_READY)
		return sysfs_emit(buf, "up\n");
	return sysfs_emit(buf, "connecting\n");
}
static DEVICE_ATTR_RO(link_state);

static int netgpu_count_queues(struct netgpu_dev *nd, bool zombies)
{
	struct netgpu_queue *q;
	unsigned long flags;
	int i, n = 0;

	spin_lock_irqsave(&nd->qlock, flags);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		q = nd->queues[i];
		if (q && q->zombie == zombies)
			n++;
	}
	spin_unlock_irqrestore(&nd->qlock, flags);
	return n;
}

static ssize_t queues_in_use_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", netgpu_count_queues(to_ndev(dev), false));
}
static DEVICE_ATTR_RO(queues_in_use);

static ssize_t queues_stuck_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", netgpu_count_queues(to_ndev(dev), true));
}
static DEVICE_ATTR_RO(queues_stuck);

static ssize_t pinned_pages_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(&to_ndev(dev)->pinned));
}
static DEVICE_ATTR_RO(pinned_pages);

/*
 * One line per queue, for diagnosing a queue that makes no progress: the driver's ring
 * positions and books, and the device's (SQ_HEAD, CQ_TAIL, STATUS, ERROR).
 */
static ssize_t queue_state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct netgpu_dev *nd = to_ndev(dev);
	struct netgpu_queue *q;
	ssize_t n = 0;
	int i;

	mutex_lock(&nd->qmutex);
	down_read(&nd->io_sem);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		u32 head = 0, tail = 0, st = 0, err = 0;
		unsigned long flags;
		u32 credits, cq_head, sq_tail;
		u64 seq;

		q = nd->queues[i];
		if (!q)
			continue;
		spin_lock_irqsave(&q->lock, flags);
		credits = q->credits;
		cq_head = q->cq_head;
		spin_unlock_irqrestore(&q->lock, flags);
		sq_tail = READ_ONCE(q->sq_tail);
		seq = READ_ONCE(q->next_seq);
		if (!nd->dead) {
			head = rd32(nd, qreg(q->qid, NETGPU_QREG_SQ_HEAD));
			tail = rd32(nd, qreg(q->qid, NETGPU_QREG_CQ_TAIL));
			st = rd32(nd, qreg(q->qid, NETGPU_QREG_STATUS));
			err = rd32(nd, qreg(q->qid, NETGPU_QREG_ERROR));
		}
		n += sysfs_emit_at(buf, n,
				   "queue %u%s%s: sq_tail %u cq_head %u in_flight %u next_seq %llu device: sq_head %u cq_tail %u status %#x error %u\n",
				   q->qid, q->zombie ? " stuck" : "", READ_ONCE(q->broken) ? " failed" : "",
				   sq_tail, cq_head, credits, seq, head, tail, st, err);
	}
	up_read(&nd->io_sem);
	mutex_unlock(&nd->qmutex);
	return n;
}
static DEVICE_ATTR_RO(queue_state);

static ssize_t irq_mode_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct netgpu_dev *nd = to_ndev(dev);

	return sysfs_emit(buf, "%s %d\n", nd->msix ? "msix" : "intx", nd->nvec);
}
static DEVICE_ATTR_RO(irq_mode);

static struct attribute *netgpu_attrs[] = {
	&dev_attr_gpu_name.attr,
	&dev_attr_total_mem.attr,
	&dev_attr_memory_quota.attr,
	&dev_attr_sm_count.attr,
	&dev_attr_driver_version.attr,
	&dev_attr_compute_capability.attr,
	&dev_attr_abi_version.attr,
	&dev_attr_executor.attr,
	&dev_attr_link_state.attr,
	&dev_attr_queues_in_use.attr,
	&dev_attr_queues_stuck.attr,
	&dev_attr_pinned_pages.attr,
	&dev_attr_queue_state.attr,
	&dev_attr_irq_mode.attr,
	NULL,
};
ATTRIBUTE_GROUPS(netgpu);

/* ---------------------------------------------------------------- PCI */

static int netgpu_setup_irqs(struct netgpu_dev *nd)
{
	struct pci_dev *pdev = nd->pdev;
	int i, ret;

	nd->nvec = -ENOSPC;
	if (msix)
		nd->nvec = pci_alloc_irq_vectors(pdev, 2, NETGPU_MSIX_VECTORS, PCI_IRQ_MSIX);
	if (nd->nvec >= 2) {
		nd->msix = true;
		for (i = 0; i < nd->nvec; i++) {
			nd->vecs[i].nd = nd;
			nd->vecs[i].index = i;
			ret = request_irq(pci_irq_vector(pdev, i), netgpu_msix_irq, 0, DRV_NAME,
					  &nd->vecs[i]);
			if (ret)
				goto fail;
		}
		return 0;
	}
	nd->nvec = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_INTX);
	if (nd->nvec < 1)
		return nd->nvec ? nd->nvec : -ENODEV;
	nd->msix = false;
	ret = request_irq(pci_irq_vector(pdev, 0), netgpu_intx_irq, IRQF_SHARED, DRV_NAME, nd);
	if (ret)
		pci_free_irq_vectors(pdev);
	return ret;
fail:
	while (--i >= 0)
		free_irq(pci_irq_vector(pdev, i), &nd->vecs[i]);
	pci_free_irq_vectors(pdev);
	return ret;
}

static void netgpu_free_irqs(struct netgpu_dev *nd)
{
	int i;

	if (nd->msix) {
		for (i = 0; i < nd->nvec; i++)
			free_irq(pci_irq_vector(nd->pdev, i), &nd->vecs[i]);
	} else {
		free_irq(pci_irq_vector(nd->pdev, 0), nd);
	}
	pci_free_irq_vectors(nd->pdev);
}

/* Features the driver uses, from those the device offers. */
static void netgpu_negotiate(struct netgpu_dev *nd)
{
	nd->lim.features = rd64(nd, NETGPU_REG_DEVICE_FEATURES) &
			   (NETGPU_FEATURE_SG_INDIRECT | NETGPU_FEATURE_ASYNC |
			    NETGPU_FEATURE_INTR_COALESCING | NETGPU_FEATURE_WIRE_REQUEST |
			    NETGPU_FEATURE_OUT_OF_ORDER);
	wr64(nd, NETGPU_REG_DRIVER_FEATURES, nd->lim.features);
}

static int netgpu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct netgpu_dev *nd;
	u32 magic;
	int ret;

	nd = kzalloc(sizeof(*nd), GFP_KERNEL);
	if (!nd)
		return -ENOMEM;
	kref_init(&nd->ref);
	init_rwsem(&nd->io_sem);
	mutex_init(&nd->qmutex);
	spin_lock_init(&nd->qlock);
	init_waitqueue_head(&nd->event_wq);
	nd->pdev = pci_dev_get(pdev);
	nd->minor = -1;

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto put;
	ret = pci_request_mem_regions(pdev, DRV_NAME);
	if (ret)
		goto disable;
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		goto release;
	/* Scatter entries have 32-bit lengths: let an IOMMU merge pages into long segments. */
	dma_set_max_seg_size(&pdev->dev, UINT_MAX);
	nd->regs = pci_iomap(pdev, NETGPU_REGS_BAR, NETGPU_REGS_BAR_SIZE);
	if (!nd->regs) {
		ret = -ENOMEM;
		goto release;
	}
	magic = rd32(nd, NETGPU_REG_MAGIC);
	nd->version = rd32(nd, NETGPU_REG_VERSION);
	if (magic != NETGPU_MAGIC || (nd->version >> 16) != NETGPU_ABI_VERSION_MAJOR) {
		dev_err(&pdev->dev, "not a netgpu ABI %u device (magic %#x, version %#x)\n",
			NETGPU_ABI_VERSION_MAJOR, magic, nd->version);
		ret = -ENODEV;
		goto unmap;
	}
	pci_set_master(pdev);
	nd->max_queues = min_t(u32, rd32(nd, NETGPU_REG_MAX_QUEUES), NETGPU_MAX_QUEUES);
	nd->lim.max_sg = min_t(u32, rd32(nd, NETGPU_REG_MAX_SG_ENTRIES), NETGPU_MAX_SG_ENTRIES);
	nd->lim.max_transfer = min_t(u32, rd32(nd, NETGPU_REG_MAX_TRANSFER), NETGPU_MAX_TRANSFER);
	/* ABI 1.1 devices know which entries they may write (SG_FLAG_DEVICE_WRITE). */
	nd->lim.dir_flags = (nd->version & 0xffff) >= 1;
	netgpu_negotiate(nd);
	if (nd->max_queues == 0 || queue_size < NETGPU_MIN_QUEUE_SIZE ||
	    queue_size > min_t(u32, rd32(nd, NETGPU_REG_MAX_QUEUE_SIZE), NETGPU_MAX_QUEUE_SIZE) ||
	    !is_power_of_2(queue_size)) {
		dev_err(&pdev->dev, "unusable queue configuration (%u queues, queue_size %u)\n",
			nd->max_queues, queue_size);
		ret = -EINVAL;
		goto unmap;
	}
	ret = netgpu_setup_irqs(nd);
	if (ret)
		goto unmap;
	wr32(nd, NETGPU_REG_EVENT_VECTOR, 0);

	mutex_lock(&netgpu_idr_lock);
	ret = idr_alloc(&netgpu_idr, NULL, 0, NETGPU_MAX_DEVICES, GFP_KERNEL);
	mutex_unlock(&netgpu_idr_lock);
	if (ret < 0)
		goto irqs;
	nd->minor = ret;
	pci_set_drvdata(pdev, nd);
	nd->dev = device_create(netgpu_class, &pdev->dev, MKDEV(MAJOR(netgpu_devt), nd->minor),
				nd, "netgpu%d", nd->minor);
	if (IS_ERR(nd->dev)) {
		ret = PTR_ERR(nd->dev);
		goto minor;
	}
	mutex_lock(&netgpu_idr_lock);
	idr_replace(&netgpu_idr, nd, nd->minor);
	mutex_unlock(&netgpu_idr_lock);
	dev_info(&pdev->dev, "netgpu%d: ABI %u.%u, %u queues of %u, %s, %d vectors\n", nd->minor,
		 nd->version >> 16, nd->version & 0xffff, nd->max_queues, queue_size,
		 nd->msix ? "MSI-X" : "INTx", nd->nvec);
	return 0;
minor:
	mutex_lock(&netgpu_idr_lock);
	idr_remove(&netgpu_idr, nd->minor);
	mutex_unlock(&netgpu_idr_lock);
irqs:
	netgpu_free_irqs(nd);
unmap:
	pci_iounmap(pdev, nd->regs);
release:
	pci_release_mem_regions(pdev);
disable:
	pci_disable_device(pdev);
put:
	netgpu_dev_put(nd);
	return ret;
}

/*
 * Hot-unplug or driver unbind. Open files stay valid but every call fails with ENODEV; the
 * device struct lives until the last of them is closed. Everything that involves the PCI
 * device (its registers, interrupts, DMA mappings, rings, pinned pages) is given back here.
 */
static void netgpu_remove(struct pci_dev *pdev)
{
	struct netgpu_dev *nd = pci_get_drvdata(pdev);
	unsigned long deadline;
	struct netgpu_queue *q;
	u64 running = 0;
	int i;

	/* No new opens from here on; open files keep their queue's reference to nd. */
	mutex_lock(&netgpu_idr_lock);
	idr_remove(&netgpu_idr, nd->minor);
	mutex_unlock(&netgpu_idr_lock);
	WRITE_ONCE(nd->removing, true);
	netgpu_fail_all(nd);
	wake_up_all(&nd->event_wq);
	device_destroy(netgpu_class, MKDEV(MAJOR(netgpu_devt), nd->minor));
	netgpu_free_irqs(nd);

	/*
	 * Stop every queue and wait until each has quiesced, so nothing DMAs into memory that
	 * is given back below. A surprise-removed device reads all ones: nothing to wait for.
	 */
	down_write(&nd->io_sem);
	for (i = 0; i < nd->max_queues; i++)
		wr32(nd, qreg(i, NETGPU_QREG_ENABLE), 0);
	deadline = jiffies + msecs_to_jiffies(NETGPU_STOP_TIMEOUT_MS);
	for (i = 0; i < nd->max_queues; i++) {
		u32 st;

		while ((st = rd32(nd, qreg(i, NETGPU_QREG_STATUS))) != ~0u &&
		       (st & NETGPU_QSTATUS_ENABLED) && time_before(jiffies, deadline))
			usleep_range(1000, 2000);
		if (!netgpu_all_ones(st) && (st & NETGPU_QSTATUS_ENABLED)) {
			dev_err(&pdev->dev, "queue %d still running at removal: its memory stays pinned\n",
				i);
			running |= BIT_ULL(i);
		}
	}
	nd->dead = true;
	up_write(&nd->io_sem);

	mutex_lock(&nd->qmutex);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		q = nd->queues[i];
		if (!q)
			continue;
		q->leak = running & BIT_ULL(i);
		netgpu_queue_teardown(q);
		if (q->zombie) {
			netgpu_queue_unpublish(q);
			netgpu_queue_free(q);
		}
	}
	mutex_unlock(&nd->qmutex);

	pci_iounmap(pdev, nd->regs);
	pci_clear_master(pdev);
	pci_release_mem_regions(pdev);
	pci_disable_device(pdev);
	netgpu_dev_put(nd);
}

/*
 * Function-level reset (e.g. /sys/bus/pci/devices/.../reset): the device drops every queue
 * and every remote object. Open files fail (EIO) from here on; open() and submissions wait
 * or fail until reset_done().
 */
static void netgpu_reset_prepare(struct pci_dev *pdev)
{
	struct netgpu_dev *nd = pci_get_drvdata(pdev);

	WRITE_ONCE(nd->resetting, true);
	/* Let register users, submitters and queue creations that started before finish. */
	down_write(&nd->io_sem);
	up_write(&nd->io_sem);
	netgpu_fail_all(nd);
}

static void netgpu_reset_done(struct pci_dev *pdev)
{
	struct netgpu_dev *nd = pci_get_drvdata(pdev);

	down_read(&nd->io_sem);
	if (!nd->dead) {
		netgpu_negotiate(nd);
		wr32(nd, NETGPU_REG_EVENT_VECTOR, 0);
	}
	up_read(&nd->io_sem);
	WRITE_ONCE(nd->resetting, false);
	wake_up_all(&nd->event_wq);
}

static const struct pci_error_handlers netgpu_err_handlers = {
	.reset_prepare = netgpu_reset_prepare,
	.reset_done = netgpu_reset_done,
};

static const struct pci_device_id netgpu_ids[] = {
	{ PCI_DEVICE(NETGPU_VENDOR_ID, NETGPU_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, netgpu_ids);

static struct pci_driver netgpu_driver = {
	.name = DRV_NAME,
	.id_table = netgpu_ids,
	.probe = netgpu_probe,
	.remove = netgpu_remove,
	.err_handler = &netgpu_err_handlers,
};

static int __init netgpu_init(void)
{
	int ret;

	ret = alloc_chrdev_region(&netgpu_devt, 0, NETGPU_MAX_DEVICES, DRV_NAME);
	if (ret)
		return ret;
	cdev_init(&netgpu_cdev, &netgpu_fops);
	netgpu_cdev.owner = THIS_MODULE;
	ret = cdev_add(&netgpu_cdev, netgpu_devt, NETGPU_MAX_DEVICES);
	if (ret)
		goto region;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	netgpu_class = class_create(DRV_NAME);
#else
	netgpu_class = class_create(THIS_MODULE, DRV_NAME);
#endif
	if (IS_ERR(netgpu_class)) {
		ret = PTR_ERR(netgpu_class);
		goto cdev;
	}
	netgpu_class->dev_groups = netgpu_groups;
	ret = pci_register_driver(&netgpu_driver);
	if (ret)
		goto class;
	return 0;
class:
	class_destroy(netgpu_class);
cdev:
	cdev_del(&netgpu_cdev);
region:
	unregister_chrdev_region(netgpu_devt, NETGPU_MAX_DEVICES);
	return ret;
}

static void __exit netgpu_exit(void)
{
	pci_unregister_driver(&netgpu_driver);
	class_destroy(netgpu_class);
	cdev_del(&netgpu_cdev);
	unregister_chrdev_region(netgpu_devt, NETGPU_MAX_DEVICES);
	idr_destroy(&netgpu_idr);
}

module_init(netgpu_init);
module_exit(netgpu_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("netgpu");
MODULE_DESCRIPTION("netgpu virtual GPU guest driver");
MODULE_VERSION("0.2.0");
