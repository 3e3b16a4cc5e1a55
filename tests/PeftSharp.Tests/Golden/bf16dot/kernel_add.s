vpxord %zmm0, %zmm0, %zmm0
vpxord %zmm1, %zmm1, %zmm1
vpxord %zmm2, %zmm2, %zmm2
vpxord %zmm3, %zmm3, %zmm3
vpxord %zmm4, %zmm4, %zmm4
vpxord %zmm5, %zmm5, %zmm5
vpxord %zmm6, %zmm6, %zmm6
vpxord %zmm7, %zmm7, %zmm7
vpxord %zmm8, %zmm8, %zmm8
vpxord %zmm9, %zmm9, %zmm9
vpxord %zmm10, %zmm10, %zmm10
vpxord %zmm11, %zmm11, %zmm11
vpxord %zmm12, %zmm12, %zmm12
vpxord %zmm13, %zmm13, %zmm13
vpxord %zmm14, %zmm14, %zmm14
vpxord %zmm15, %zmm15, %zmm15
vpxord %zmm16, %zmm16, %zmm16
vpxord %zmm17, %zmm17, %zmm17
vpxord %zmm18, %zmm18, %zmm18
vpxord %zmm19, %zmm19, %zmm19
vpxord %zmm20, %zmm20, %zmm20
vpxord %zmm21, %zmm21, %zmm21
vpxord %zmm22, %zmm22, %zmm22
vpxord %zmm23, %zmm23, %zmm23
.Lloop:
vmovups 0(%rsi), %zmm24
vmovups 64(%rsi), %zmm25
vmovups 128(%rsi), %zmm26
vpbroadcastd 0(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm0
vdpbf16ps %zmm27, %zmm25, %zmm1
vdpbf16ps %zmm27, %zmm26, %zmm2
vpbroadcastd 4(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm3
vdpbf16ps %zmm27, %zmm25, %zmm4
vdpbf16ps %zmm27, %zmm26, %zmm5
vpbroadcastd 8(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm6
vdpbf16ps %zmm27, %zmm25, %zmm7
vdpbf16ps %zmm27, %zmm26, %zmm8
vpbroadcastd 12(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm9
vdpbf16ps %zmm27, %zmm25, %zmm10
vdpbf16ps %zmm27, %zmm26, %zmm11
vpbroadcastd 16(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm12
vdpbf16ps %zmm27, %zmm25, %zmm13
vdpbf16ps %zmm27, %zmm26, %zmm14
vpbroadcastd 20(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm15
vdpbf16ps %zmm27, %zmm25, %zmm16
vdpbf16ps %zmm27, %zmm26, %zmm17
vpbroadcastd 24(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm18
vdpbf16ps %zmm27, %zmm25, %zmm19
vdpbf16ps %zmm27, %zmm26, %zmm20
vpbroadcastd 28(%rdi), %zmm27
vdpbf16ps %zmm27, %zmm24, %zmm21
vdpbf16ps %zmm27, %zmm25, %zmm22
vdpbf16ps %zmm27, %zmm26, %zmm23
add $32, %rdi
add $192, %rsi
dec %rdx
jnz .Lloop
vaddps 0(%rcx), %zmm0, %zmm0
vmovups %zmm0, 0(%rcx)
vaddps 64(%rcx), %zmm1, %zmm1
vmovups %zmm1, 64(%rcx)
vaddps 128(%rcx), %zmm2, %zmm2
vmovups %zmm2, 128(%rcx)
add %r8, %rcx
vaddps 0(%rcx), %zmm3, %zmm3
vmovups %zmm3, 0(%rcx)
vaddps 64(%rcx), %zmm4, %zmm4
vmovups %zmm4, 64(%rcx)
vaddps 128(%rcx), %zmm5, %zmm5
vmovups %zmm5, 128(%rcx)
add %r8, %rcx
vaddps 0(%rcx), %zmm6, %zmm6
vmovups %zmm6, 0(%rcx)
vaddps 64(%rcx), %zmm7, %zmm7
vmovups %zmm7, 64(%rcx)
vaddps 128(%rcx), %zmm8, %zmm8
vmovups %zmm8, 128(%rcx)
add %r8, %rcx
vaddps 0(%rcx), %zmm9, %zmm9
vmovups %zmm9, 0(%rcx)
vaddps 64(%rcx), %zmm10, %zmm10
vmovups %zmm10, 64(%rcx)
vaddps 128(%rcx), %zmm11, %zmm11
vmovups %zmm11, 128(%rcx)
add %r8, %rcx
vaddps 0(%rcx), %zmm12, %zmm12
vmovups %zmm12, 0(%rcx)
vaddps 64(%rcx), %zmm13, %zmm13
vmovups %zmm13, 64(%rcx)
vaddps 128(%rcx), %zmm14, %zmm14
vmovups %zmm14, 128(%rcx)
add %r8, %rcx
vaddps 0(%rcx), %zmm15, %zmm15
vmovups %zmm15, 0(%rcx)
vaddps 64(%rcx), %zmm16, %zmm16
vmovups %zmm16, 64(%rcx)
vaddps 128(%rcx), %zmm17, %zmm17
vmovups %zmm17, 128(%rcx)
add %r8, %rcx
vaddps 0(%rcx), %zmm18, %zmm18
vmovups %zmm18, 0(%rcx)
vaddps 64(%rcx), %zmm19, %zmm19
vmovups %zmm19, 64(%rcx)
vaddps 128(%rcx), %zmm20, %zmm20
vmovups %zmm20, 128(%rcx)
add %r8, %rcx
vaddps 0(%rcx), %zmm21, %zmm21
vmovups %zmm21, 0(%rcx)
vaddps 64(%rcx), %zmm22, %zmm22
vmovups %zmm22, 64(%rcx)
vaddps 128(%rcx), %zmm23, %zmm23
vmovups %zmm23, 128(%rcx)
vzeroupper
ret
