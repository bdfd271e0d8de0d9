"""What each model parameter (a config's ``model_params``) means: the descriptions the exported
JSON schema gives editors. A parameter means the same in every model that declares it; a model
whose constructor declares one missing here is refused when its parameters are read
(:func:`prectr.models.registry.params_model`)."""

DESCRIPTIONS: dict[str, str] = {
    # every neural model
    "embedding_dim": "width of every categorical and sequence feature's embedding",
    "hidden": "widths of the click network's hidden layers, input side first",
    "dropout": "dropout rate after each hidden layer of the click network",
    # baselines
    "n_cross": "DCN-V2: number of cross layers beside the deep network",
    "attention_hidden": "widths of the target attention's scoring network (DIN's activation "
    "unit) over the user's clicked items (PRECTR: read only with target_attention true)",
    "relevance_hidden": "widths of the relevance module's hidden layers between the text "
    "encoding and the four grade logits",
    # PRECTR: the unified relevance-CTR
    "monotone": "make each candidate's click logit non-decreasing in the relevance grade",
    "grade_heads": "the click heads per relevance grade: free (each grade its own output of "
    "the click trunk, the paper's) or offset (one click logit for the candidate plus a learnt "
    "offset per grade, the same for every candidate)",
    "target_attention": "the click trunk's candidate attends over the user's clicked items "
    "(DIN's target attention); false reads them only mean-pooled, an Emb+MLP input",
    "text_encoder": "how the relevance module reads query and title: bag (mean of word "
    "embeddings), student (a distilled transformer) or cache (a frozen encoder's cached "
    "embeddings)",
    "student": "text_encoder student: the distilled student's directory",
    "frozen_encoder": "text_encoder student: keep the student's weights fixed in training",
    "student_frozen_layers": "text_encoder student: fix its embeddings and this many of its "
    "lowest transformer layers (all: both towers, so only the pair interaction and the grade "
    "head train) and keep their output for each distinct text, so a step runs only the layers "
    "above; 0 trains every layer end to end",
    "student_reuse_steps": "text_encoder student: a text's state, once encoded in a training "
    "pass, serves this many passes (the later ones read it without gradient; SpeedyFeed's "
    "cache), so a step encodes only the texts not met recently; scoring always encodes "
    "afresh; 0 or 1 encodes every text every pass",
    "text_cache": "text_encoder cache: the frozen encoder's embedding cache file",
    "encoder_precision": "text_encoder student: its training passes in fp32, in bfloat16 "
    "autocast (bf16), or auto (bf16 where the processor multiplies bfloat16 natively)",
    # PRECTR: the personalised relevance incentive
    "incentive": "add the relevance incentive, mined from histories, to the fused logit",
    "cross_user": "PRECTR-V2: mine the relevance preference from what all users did under the "
    "same query (the crowd) besides the user's own history",
    "crowd_identity": "crowd entries carry the shown item and its category; false keeps only "
    "their match level and click",
    "crowd_signal": "what the crowd's entries say: entries (each impression of the window) or "
    "relative (per match level, its click rate minus the window's mean click rate; no base "
    "rate, window length or crowd presence; needs crowd_identity false)",
    "crowd_from": "whose crowd mining reads: own (the request's query's, the paper's) or "
    "other (a control: another query's request in the batch, so the crowd says nothing of the "
    "request's query while the module and its training stay the same)",
    "preference_dim": "width of the relevance preference tau",
    "preference_heads": "attention heads of the preference mining over each history",
    "activity_gate": "weigh the user's and the crowd's preference by the user's activity "
    "instead of summing them",
    # PRECTR: semantic consistency
    "consistency": "keeping the relevance module faithful while clicks train it: ce on the "
    "human grades, kl to the stage-1 module (needs train.relevance_epochs), or none",
    "consistency_weight": "weight of the consistency loss beside the click loss",
    # PRECTR-V2: exposure-bias correction
    "debias": "PRECTR-V2: rank each click above hard negatives with a pairwise loss",
    "debias_weight": "weight of the pairwise and reconstruction losses beside the click loss",
    "debias_negatives": "the hard negatives: synthetic (mixed towards a low-grade candidate; "
    "their validated debias_weight is 0.03), unexposed (logged candidates never shown; "
    "PRECTR-V2's default, at weight 0.03) or both",
    "hard_negatives": "negatives of each kind paired with every click",
    "mix_max": "synthetic negatives: the largest share of the click's own relevance "
    "pre-activation in the mix",
    "reconstruct_embedding": "let the reconstruction loss of synthetic negatives train the "
    "relevance embedding, not only the grade head",
    "debias_push": "which side of each pair the pairwise loss moves: both (the click up and "
    "its negative down, the paper's) or negatives (the negative down only, the click's score "
    "left to the click loss; on bench it cost more AUC and removed fewer irrelevant items)",
    "debias_trains_item_ids": "let the pairwise loss train the item-ID embeddings of the "
    "unexposed candidates it pushes down (false: their own ID is read detached, so the loss "
    "acts through their relevance, their other features, the request's histories and the "
    "shared layers; an ID in a history is still trained through that history)",
    "debias_margin": "margin the pairwise loss asks a click to lead its negative by",
    "debias_clip": "pairwise score differences are clipped to this size",
    "truncate_start": "dynamic truncation: pairs ordered by more than this are dropped, at "
    "the first step",
    "truncate_end": "dynamic truncation: the threshold once the schedule is over",
    "truncate_steps": "dynamic truncation: steps over which the threshold moves linearly from "
    "truncate_start to truncate_end",
}
