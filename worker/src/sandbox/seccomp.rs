//! A small seccomp deny-list for sandboxed scripts: the kernel interfaces a build never needs and
//! that are not namespaced or have a long record of privilege escalations. Docker's default
//! profile refuses the same calls (moby/profiles `seccomp/default.json`); everything else is
//! allowed, so package managers and compilers run unchanged.
//!
//! The filter is classic BPF over `struct seccomp_data` (seccomp(2)): check the architecture
//! (a 32-bit `int 0x80` call on x86_64 arrives with another one and other numbers), refuse the
//! x32 ABI's aliases, then compare the syscall number. Refused calls fail with `EPERM`.

/// `AUDIT_ARCH_X86_64` (linux/audit.h): `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64` (linux/audit.h): `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// First x32 syscall number (`__X32_SYSCALL_BIT`); x32 aliases of denied calls start there.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(target_arch = "aarch64")]
const X32_SYSCALL_BIT: Option<u32> = None;

/// The refused calls: kernel keyrings (not namespaced), eBPF and perf (CVE-heavy, and perf
/// sees host activity), userfaultfd (a favourite of kernel exploits for winning races), kernel
/// modules and kexec, and the file-handle calls of the "shocker" escape.
const DENIED: &[libc::c_long] = &[
    libc::SYS_add_key,
    libc::SYS_keyctl,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_open_by_handle_at,
];

/// `offsetof(struct seccomp_data, nr)`.
const NR_OFFSET: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const ARCH_OFFSET: u32 = 4;

/// One classic BPF instruction, `struct sock_filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LOAD_WORD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JUMP_EQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JUMP_GE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// What a refused call returns: `EPERM`, as for a call the caller may not make.
const DENY: u32 = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);

/// The filter for this architecture.
pub(crate) fn deny_list() -> Vec<Instruction> {
    let denied: Vec<u32> = DENIED.iter().map(|nr| *nr as u32).collect();
    program(AUDIT_ARCH, X32_SYSCALL_BIT, &denied)
}

/// Builds the program: every jump lands on the final `ALLOW` or the `DENY` right after it.
fn program(arch: u32, x32_bit: Option<u32>, denied: &[u32]) -> Vec<Instruction> {
    let op = |code, k, jt, jf| Instruction { code, jt, jf, k };
    let mut checks = Vec::new();
    if let Some(bit) = x32_bit {
        checks.push((JUMP_GE, bit));
    }
    checks.extend(denied.iter().map(|nr| (JUMP_EQ, *nr)));
    // Layout: [load arch, arch check, load nr, checks..., ALLOW, DENY].
    let n = checks.len();
    let mut out = vec![
        op(LOAD_WORD, ARCH_OFFSET, 0, 0),
        // A foreign architecture jumps over everything to DENY.
        op(JUMP_EQ, arch, 0, jump(n + 2)),
        op(LOAD_WORD, NR_OFFSET, 0, 0),
    ];
    for (i, (code, k)) in checks.into_iter().enumerate() {
        // From check i, DENY is (n - i - 1) checks + ALLOW ahead.
        out.push(op(code, k, jump(n - i), 0));
    }
    out.push(op(RETURN, libc::SECCOMP_RET_ALLOW, 0, 0));
    out.push(op(RETURN, DENY, 0, 0));
    out
}

/// A jump offset; the deny-list is far shorter than 256 instructions.
fn jump(offset: usize) -> u8 {
    u8::try_from(offset).expect("seccomp deny-list shorter than 256 entries")
}

/// Installs `program` for the calling thread and its future children. Needs no_new_privs (or
/// `CAP_SYS_ADMIN`), which the script has set just before.
pub(crate) fn install(program: &[Instruction]) -> std::io::Result<()> {
    let mut filters: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(filters.len()).map_err(std::io::Error::other)?,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `filters`, a live array of `len` instructions that outlives the
    // call; the kernel copies the program before returning (seccomp(2)).
    let result = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` the way the kernel would for a call `nr` on `arch`.
    fn verdict(program: &[Instruction], arch: u32, nr: u32) -> u32 {
        let mut accumulator = 0;
        let mut pc = 0;
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                LOAD_WORD if i.k == ARCH_OFFSET => accumulator = arch,
                LOAD_WORD if i.k == NR_OFFSET => accumulator = nr,
                JUMP_EQ | JUMP_GE => {
                    let taken = if i.code == JUMP_EQ {
                        accumulator == i.k
                    } else {
                        accumulator >= i.k
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RETURN => return i.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    fn denied_calls_get_eperm_and_the_rest_pass() {
        let program = deny_list();
        for nr in DENIED {
            assert_eq!(verdict(&program, AUDIT_ARCH, *nr as u32), DENY, "{nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_clone,
            libc::SYS_mount,
            libc::SYS_setresuid,
        ] {
            assert_eq!(
                verdict(&program, AUDIT_ARCH, nr as u32),
                libc::SECCOMP_RET_ALLOW,
                "{nr}"
            );
        }
    }

    #[test]
    fn other_architectures_and_x32_aliases_are_denied() {
        let program = program(0xc000_003e, Some(0x4000_0000), &[250]);
        assert_eq!(verdict(&program, 0x4000_0003, 0), DENY, "i386 int 0x80");
        assert_eq!(verdict(&program, 0xc000_003e, 0x4000_0000 + 250), DENY);
        assert_eq!(verdict(&program, 0xc000_003e, 250), DENY);
        assert_eq!(verdict(&program, 0xc000_003e, 251), libc::SECCOMP_RET_ALLOW);
    }
}
