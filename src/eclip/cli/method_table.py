"""What `eclip methods` lists, stored so that it answers without importing torch (every method module imports it).

Written from the method registry by
`python -c "from eclip.cli.listing import write_method_table; write_method_table()"`;
tests/test_cli_startup.py fails when it differs from the registry. Do not edit by hand.
"""
# ruff: noqa: E501
METHODS = "\n".join((
    'itsm\tresnet,vit\tECLIP / ITSM: Li et al. 2022, arXiv 2209.07046',
    '\toptions: softmax=false (bool)',
    'itsm_specific\tresnet,vit\tITSM (Li et al. 2022, arXiv 2209.07046) along class-specific text directions (ours)',
    'free_attention\tresnet,vit\tfree attention of ECLIP: Li et al. 2022, arXiv 2209.07046 (v2); rollout: Abnar & Zuidema 2020, arXiv 2005.00928',
    '\toptions: source=cls_attention (str)',
    'gradcam\tresnet,vit\tGrad-CAM: Selvaraju et al. 2017, arXiv 1610.02391',
    '\toptions: target=cosine (str), text_batch=none (int or none), vmap=false (bool), layer=-1 (int)',
    'chefer\tvit\tChefer, Gur, Wolf 2021 (generic attention explainability), arXiv 2103.15679',
    '\toptions: target=logit (str), text_batch=none (int or none), vmap=true (bool), start_layer=-1 (int)',
    'rollout\tvit\tAttention rollout: Abnar & Zuidema 2020, arXiv 2005.00928',
    '\toptions: residual=0.5 (float)',
    'rise\tresnet,vit\tRISE: Petsiuk, Das, Saenko 2018, arXiv 1806.07421',
    '\toptions: n_masks=500 (int), cells=8 (int), p=0.5 (float), seed=0 (int), batch_size=64 (int)',
    'maskclip\tresnet,vit\tMaskCLIP: Zhou, Loy, Dai 2022, arXiv 2112.01071',
    '\toptions: residual=true (bool), ffn=true (bool)',
    'surgery\tresnet,vit\tCLIP Surgery: Li, Wang, Duan, Li 2023, arXiv 2304.05653',
    '\toptions: depth=6 (int), remove_redundant=true (bool), temperature=2.0 (float)',
    'sclip\tvit\tSCLIP: Wang, Mei, Yuille 2023, arXiv 2312.01597',
    '\toptions: residual=true (bool), ffn=true (bool)',
    'clearclip\tvit\tClearCLIP: Lan et al. 2024, arXiv 2407.12442',
    '\toptions: residual=false (bool), ffn=false (bool)',
    'naclip\tvit\tNACLIP: Hajimiri, Ben Ayed, Dolz 2024, arXiv 2404.08181',
    '\toptions: residual=false (bool), ffn=false (bool), sigma=5.0 (float)',
    'gem\tvit\tGEM (Grounding Everything): Bousselham et al. 2024, arXiv 2312.00878',
    '\toptions: depth=6 (int), iterations=1 (int), temperature=none (float or none)',
    'grad_eclip\tresnet,vit\tGrad-ECLIP: Zhao et al. 2024 (ICML), arXiv 2502.18816',
    '\toptions: target=cosine (str), text_batch=none (int or none), vmap=false (bool), layers=1 (int), heads=1 (int or none)',
    'legrad\tvit\tLeGrad: Bousselham et al. 2024, arXiv 2404.03214',
    '\toptions: target=cosine (str), text_batch=none (int or none), vmap=false (bool), layer_index=-2 (int)',
    'decomposition\tvit\tText-based decomposition: Gandelsman, Efros, Steinhardt 2024 (ICLR), arXiv 2310.05916',
    '\toptions: layers=none (int or none), center=true (bool)',
    'interactions\tresnet,vit\tSecond-order interactions: Möller, Tilli, Vu, Padó 2025 (TMLR), arXiv 2408.14153',
    '\toptions: steps=10 (int), chunk=32 (int)',
    'phrase\tresnet,vit\tPhrase localisation without training: Li, Shakhnarovich, Yeh 2022, arXiv 2204.03647',
    '\toptions: temperature=none (float or none), segments=none (list of int or none), upsample=2 (int), pad=none (int or none), float16_positions=true (bool)',
    'cliptrase\tvit\tCLIPtrase: Shao, Tian, Zhao, Su 2024, arXiv 2407.08268',
    '\toptions: cluster=true (bool), eps=none (float or none), min_samples=none (int or none)',
))
