/*
 * kiln accelerator probe: a 512-byte MBR boot sector that proves the accelerator runs 64-bit
 * (long mode) guest code, and runs it at a usable speed. Opening /dev/kvm, or SeaBIOS printing
 * (it stays in 16/32-bit mode), proves neither: on some hosts (nested, software-assisted KVM)
 * every guest instruction is emulated, ~1000x slower than TCG, and a Linux kernel looks hung.
 *
 * Loaded at 0x7c00 by SeaBIOS. Path: real mode -> fast A20 -> GDT -> 32-bit protected mode ->
 * identity-map the first 2 MiB (PML4 0x1000, PDPT 0x2000, PD 0x3000, one 2 MiB page) -> PAE ->
 * EFER.LME -> paging -> far jump to a 64-bit code segment. Nothing is printed before long mode,
 * so any output at all means 64-bit code ran.
 *
 * In long mode, every line going to both COM1 (0x3f8) and debugcon (0x402):
 *  1. computes sum(i*i, i=1..100000) = 333338333350000 with r8-r10 (registers that exist only in
 *     64-bit mode; the value needs more than 32 bits) and compares it to the constant:
 *       match    -> "KILN-PROBE-OK\n"
 *       mismatch -> "KILN-PROBE-BAD\n", out EXIT_BAD to 0xf4
 *  2. measures speed: runs 10000-iteration chunks of a 64-bit add/rotate loop while PIT channel 2
 *     (QEMU times it on the host clock) counts down 50 ms, and prints
 *     "KILN-PROBE-SPEED <loop iterations per ms>\n" (0 if the timer never fired), out EXIT_OK.
 * Port 0xf4 is QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=0x04`: QEMU exits at once with
 * status (value << 1) | 1, i.e. 85 on success, 43 on a bad result. Without that device the
 * write is ignored and the CPU parks in a cli/hlt loop.
 *
 * Build with scripts/accel-probe/build.sh (plain GNU as, no C preprocessor needed).
 */
        .set COM1,      0x3f8
        .set COM1_LSR,  0x3fd
        .set DEBUGCON,  0x402
        .set EXIT_PORT, 0xf4
        .set EXIT_OK,   0x2a            /* QEMU exit status 85 */
        .set EXIT_BAD,  0x15            /* QEMU exit status 43 */
        .set PML4,      0x1000
        .set PDPT,      0x2000
        .set PD,        0x3000
        .set N,         100000
        .set EXPECTED,  333338333350000 /* N(N+1)(2N+1)/6 */
        .set WINDOW_MS, 50
        .set LATCH,     59659           /* 50 ms of the 1193182 Hz PIT clock */
        .set CHUNK,     10000
        .set MAX_CHUNKS, 0x40000        /* give up (report 0) after ~2.6e9 iterations */
        .set NUMBUF,    0x5000          /* scratch for the decimal digits */

        .text
        .globl _start

        .code16
_start:
        cli
        cld
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        ljmp    $0, $real               /* normalise CS:IP to 0000:7cxx */
real:
        inb     $0x92, %al              /* fast A20 (bit 1), never touch reset (bit 0) */
        orb     $0x02, %al
        andb    $0xfe, %al
        outb    %al, $0x92

        lgdtl   gdt_desc
        movl    %cr0, %eax
        orl     $1, %eax                /* CR0.PE */
        movl    %eax, %cr0
        ljmp    $0x08, $prot

        .code32
prot:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movl    $0x7c00, %esp

        movl    $PML4, %edi             /* zero the three tables, 0x1000-0x3fff */
        xorl    %eax, %eax
        movl    $(3 * 4096 / 4), %ecx
        rep stosl
        movl    $(PDPT | 3), PML4       /* present | writable */
        movl    $(PD | 3), PDPT
        movl    $0x83, PD               /* 0-2 MiB: present | writable | 2 MiB page */

        movl    $PML4, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x20, %eax             /* CR4.PAE */
        movl    %eax, %cr4
        movl    $0xc0000080, %ecx       /* EFER */
        rdmsr
        orl     $0x100, %eax            /* EFER.LME */
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000000, %eax       /* CR0.PG: long mode becomes active */
        movl    %eax, %cr0
        ljmp    $0x18, $long

        .code64
long:
        xorl    %eax, %eax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movl    $0x7c00, %esp

        xorq    %r8, %r8                /* r8 = sum, r9 = i */
        movq    $1, %r9
sum:
        movq    %r9, %r10
        imulq   %r9, %r10
        addq    %r10, %r8
        incq    %r9
        cmpq    $N, %r9
        jbe     sum
        movabsq $EXPECTED, %rax
        cmpq    %rax, %r8
        jne     bad

        leaq    msg_ok(%rip), %rsi
        call    puts

        /* Speed: count CHUNK-iteration chunks of 64-bit arithmetic run while PIT channel 2
         * (a wall-clock timer QEMU emulates on the host clock) counts down WINDOW_MS ms. The
         * port read between chunks is a VM exit under KVM, hence the big chunks. */
        inb     $0x61, %al
        andb    $0xfc, %al              /* speaker data off */
        orb     $0x01, %al              /* channel 2 gate on */
        outb    %al, $0x61
        movb    $0xb0, %al              /* channel 2, lo/hi byte, mode 0, binary */
        outb    %al, $0x43
        movb    $(LATCH & 0xff), %al
        outb    %al, $0x42
        movb    $(LATCH >> 8), %al
        outb    %al, $0x42              /* OUT2 low now, high when the count reaches 0 */
        xorl    %ebp, %ebp
chunk:
        movl    $CHUNK, %ecx
spin:
        addq    %rcx, %r8
        rolq    $7, %r8
        decl    %ecx
        jnz     spin
        incl    %ebp
        inb     $0x61, %al
        testb   $0x20, %al              /* OUT2 */
        jnz     timed
        cmpl    $MAX_CHUNKS, %ebp
        jb      chunk
        xorl    %ebp, %ebp              /* timer never fired: report 0 */
timed:
        leaq    msg_speed(%rip), %rsi
        call    puts
        imulq   $(CHUNK / WINDOW_MS), %rbp, %rax  /* iterations per ms */
        movl    $(NUMBUF + 20), %edi    /* decimal digits, built backwards, then "\n\0" */
        movw    $0x0a, (%rdi)
        movl    $10, %ecx
digit:
        xorl    %edx, %edx
        divq    %rcx
        addb    $'0', %dl
        decq    %rdi
        movb    %dl, (%rdi)
        testq   %rax, %rax
        jnz     digit
        movq    %rdi, %rsi
        call    puts
        movb    $EXIT_OK, %al
        jmp     done
bad:
        leaq    msg_bad(%rip), %rsi
        call    puts
        movb    $EXIT_BAD, %al
done:
        outb    %al, $EXIT_PORT
park:
        cli
        hlt
        jmp     park

/* puts: write the NUL-terminated string at rsi to COM1 and debugcon. Clobbers rax, rcx, rdx, rsi. */
puts:
        lodsb
        testb   %al, %al
        jz      puts_ret
        movb    %al, %ah
        movw    $COM1_LSR, %dx
        movl    $0x100000, %ecx         /* bounded wait for THR empty (LSR bit 5) */
wait_thr:
        inb     %dx, %al
        testb   $0x20, %al
        jnz     send
        loop    wait_thr
send:
        movb    %ah, %al
        movw    $COM1, %dx
        outb    %al, %dx
        movw    $DEBUGCON, %dx
        outb    %al, %dx
        jmp     puts
puts_ret:
        ret

msg_ok:  .asciz "KILN-PROBE-OK\n"
msg_bad: .asciz "KILN-PROBE-BAD\n"
msg_speed: .asciz "KILN-PROBE-SPEED "

        .balign 8
gdt:
        .quad   0                       /* 0x00 null */
        .quad   0x00cf9a000000ffff      /* 0x08 32-bit code, flat */
        .quad   0x00cf92000000ffff      /* 0x10 data, flat */
        .quad   0x00af9a000000ffff      /* 0x18 64-bit code (L=1) */
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt

        .org    510
        .byte   0x55, 0xaa
