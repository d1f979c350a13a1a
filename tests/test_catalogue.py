"""The fail-closed catalogue: every case names the tests that pin its handling down.

Each entry is a case a promotion gate must survive (bad input, hostile input,
faults) and the tests that fail if its handling is removed. This file checks
that every named test exists, so the catalogue cannot silently rot when tests
are renamed; the README's "What happens when…" table describes the outcomes.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

CATALOGUE: dict[str, list[str]] = {
    # Audit set
    "missing manifest": ["pipelines/audit_sets/test_audit_set.py::test_missing_manifest"],
    "missing column, unknown label, path escaping the folder, missing image, "
    "duplicate rows, empty audit set, box outside the image": [
        "pipelines/audit_sets/test_audit_set.py::test_bad_manifests_name_file_line_and_column",
    ],
    "unknown label without class names": [
        "pipelines/audit_sets/test_audit_set.py::test_without_class_names_labels_must_be_indices",
    ],
    "symlink out of the audit-set folder": [
        "pipelines/audit_sets/test_audit_set.py::test_symlink_out_of_the_folder_is_refused",
    ],
    "corrupt or truncated image": [
        "pipelines/audit_sets/test_audit_set.py::test_corrupt_image_names_its_line",
        "pipelines/audit_sets/test_audit_set.py::test_a_truncated_image_names_its_line",
    ],
    "grayscale or RGBA image converted to RGB": [
        "pipelines/audit_sets/test_audit_set.py::test_grayscale_and_rgba_images_are_converted_to_rgb",
    ],
    "16- and 32-bit, float, palette, alpha, CMYK and EXIF-rotated images decode to [0, 1]": [
        "pipelines/audit_sets/test_decoding.py::test_every_gray_ramp_decodes_to_the_same_unit_range",
        "pipelines/audit_sets/test_decoding.py::test_a_sixteen_bit_image_is_not_clipped_to_white",
        "pipelines/audit_sets/test_decoding.py::test_a_sixteen_bit_audit_set_loads_as_its_eight_bit_twin",
        "pipelines/audit_sets/test_decoding.py::test_colour_and_bilevel_modes_keep_their_colours",
        "pipelines/audit_sets/test_decoding.py::test_exif_orientation_is_applied_to_pixels_and_size",
    ],
    "image mode without a faithful conversion (LAB, negative, float outside [0, 1])": [
        "pipelines/audit_sets/test_decoding.py::test_modes_without_a_faithful_conversion_are_refused",
        "pipelines/audit_sets/test_decoding.py::test_a_mode_without_conversion_is_refused_from_the_header_before_any_compute",
        "pipelines/audit_sets/test_decoding.py::test_a_mode_that_cannot_be_decoded_names_its_line_and_the_reason",
    ],
    "mask of any mode, 0/1 masks (non-zero = spurious), lossy masks": [
        "pipelines/audit_sets/test_decoding.py::test_non_zero_is_spurious_in_every_mask_mode",
        "pipelines/audit_sets/test_decoding.py::test_palette_masks_are_read_by_colour_and_transparent_pixels_mark_nothing",
        "pipelines/audit_sets/test_decoding.py::test_lossy_masks_are_refused",
    ],
    "region covering the whole image: refused with the manifest, before compute": [
        "pipelines/audit_sets/test_decoding.py::test_a_region_covering_the_whole_image_is_refused_when_the_manifest_loads",
    ],
    "model that cannot tell the inputs apart, blank images (uninformative evidence)": [
        "pipelines/evidence/test_informative.py::test_accuracy_at_chance_and_one_prediction_for_mixed_labels_are_named",
        "pipelines/evidence/test_informative.py::test_chance_is_the_majority_share_so_predicting_it_everywhere_is_not_skill",
        "pipelines/evidence/test_informative.py::test_blank_images_are_named_with_their_ids_when_more_than_a_twentieth",
        "pipelines/evidence/test_informative.py::test_the_policy_decides_what_a_pass_on_uninformative_evidence_is",
        "pipelines/evidence/test_informative.py::test_the_default_policy_does_not_promote_on_uninformative_evidence",
        "pipelines/evidence/test_informative.py::test_white_images_from_a_clipping_decoder_make_a_clean_pass_uninformative",
    ],
    "image of another size refused": [
        "pipelines/audit_sets/test_audit_set.py::test_images_of_another_size_are_refused",
    ],
    "mask missing, empty or of another size": [
        "pipelines/audit_sets/test_audit_set.py::test_bad_manifests_name_file_line_and_column",
        "pipelines/audit_sets/test_audit_set.py::test_empty_or_wrongly_sized_masks_are_refused",
    ],
    "manifest not UTF-8, ragged rows, fuzzed manifests": [
        "pipelines/audit_sets/test_audit_set.py::test_a_manifest_that_is_not_utf8_is_a_clear_error",
        "pipelines/audit_sets/test_audit_set.py::test_a_row_with_more_fields_than_the_header_is_refused_not_cut",
        "pipelines/audit_sets/test_manifest_properties.py::test_any_csv_gives_a_loaded_set_or_an_audit_set_error",
    ],
    # Text
    "empty text, spurious words not in the text": [
        "pipelines/stages/test_audit_texts.py::test_bad_text_audit_sets_name_file_line_and_column",
    ],
    "text longer than the model's positions": [
        "pipelines/stages/test_audit_texts.py::test_spurious_words_cut_off_by_truncation_are_an_error_naming_the_text",
        "pipelines/stages/test_audit_texts.py::test_one_spurious_word_cut_off_is_an_error_even_when_another_fits",
        "pipelines/stages/test_audit_texts.py::test_a_long_text_whose_spurious_words_all_fit_is_truncated_and_scored",
    ],
    "text CSV not UTF-8": [
        "pipelines/stages/test_audit_texts.py::test_a_text_csv_that_is_not_utf8_is_a_clear_error_naming_the_file",
    ],
    # Model
    "model version does not exist": [
        "pipelines/verdict/test_gate.py::test_missing_model_version_is_a_clear_error",
    ],
    "a model in MLflow's default pt2 format (static or dynamic batch; pickle payloads)": [
        "pipelines/verdict/test_gate.py::test_pt2_versions_load_with_their_hierarchy_and_explain_like_the_eager_model",
        "pipelines/verdict/test_gate.py::test_a_pt2_archive_with_a_pickle_payload_is_refused_as_mlflow_refuses_it",
        "flows/test_pt2_models.py::test_pt2_lesion_models_are_gated_the_clean_one_promoted_the_shortcut_blocked",
        "flows/test_pt2_models.py::test_a_pt2_vision_transformer_is_gated_end_to_end",
        "flows/test_pt2_models.py::test_an_audit_set_of_another_size_than_the_export_is_refused_naming_both",
    ],
    "no spatial layer, wrong layer name": [
        "xai_checks/test_cam.py::test_model_without_spatial_layer_is_a_clear_error",
        "xai_checks/test_cam.py::test_unknown_layer_name_suggests_close_matches",
        "xai_checks/test_cam.py::test_module_outside_the_model_is_rejected",
    ],
    "tuple or Hugging Face outputs": [
        "xai_checks/test_cam.py::test_tuple_and_huggingface_style_outputs_are_unwrapped",
    ],
    "NaN or Inf in activations or gradients: error, never passed": [
        "xai_checks/test_cam.py::test_non_finite_activations_are_an_error_not_a_map",
        "xai_checks/test_cam.py::test_non_finite_gradients_at_the_target_layer_are_an_error_not_a_map",
        "xai_checks/test_cam.py::test_infinite_activations_are_an_error_naming_the_layer",
        "pipelines/stages/test_audit_texts.py::test_nan_logits_are_an_error_even_when_the_saliency_is_finite",
        "xai_checks/test_saliency.py::test_non_finite_logits_are_an_error_naming_the_text",
        "xai_checks/test_saliency.py::test_non_finite_saliency_over_finite_logits_is_an_error",
        "xai_checks/test_counterfactual.py::test_non_finite_model_outputs_are_an_error_not_a_flip",
        "xai_checks/test_text_counterfactual.py::test_non_finite_model_outputs_are_an_error_not_a_flip",
        "flows/test_xai_gate.py::test_a_model_that_produces_nan_ends_in_error_never_passed",
    ],
    "train mode restored, frozen backbone, half precision": [
        "xai_checks/test_cam.py::test_restores_modes_and_requires_grad_and_leaves_grads_untouched",
        "xai_checks/test_cam.py::test_hooks_removed_and_state_restored_when_forward_raises",
        "xai_checks/test_cam.py::test_explains_in_eval_mode_even_when_the_model_is_training",
        "xai_checks/test_cam.py::test_frozen_model_still_gets_gradients_at_the_target_layer",
        "xai_checks/test_cam_robustness.py::test_half_precision_weights_give_the_float_maps",
    ],
    # Infrastructure
    "tracking server unreachable at start": [
        "flows/test_cli_attention.py::test_an_unreachable_tracking_server_is_a_clear_error_in_bounded_time",
    ],
    "tracking server dies mid-run": [
        "flows/test_xai_gate.py::test_the_server_dying_while_evidence_is_logged_ends_in_error_and_no_alias",
    ],
    "process killed mid-flow (the real CLI, kill -9)": [
        "flows/test_locking.py::test_a_gate_killed_mid_flow_leaves_no_verdict_and_the_next_gate_runs_at_once",
        "flows/test_faults.py::test_killed_while_writing_a_first_verdict_it_stays_pending_and_is_gated_again",
        "flows/test_faults.py::test_killed_before_the_verdict_tag_over_an_old_pass_leaves_a_pass_that_does_not_verify",
    ],
    "rerun of a finished gate is idempotent": [
        "flows/test_xai_gate.py::test_a_rerun_reuses_the_verdict_and_moves_no_alias",
        "flows/test_xai_gate.py::test_a_verdict_that_does_not_verify_is_not_reused",
        "pipelines/verdict/test_gate.py::test_only_a_finished_verdict_under_the_same_policy_and_data_is_reused",
        "pipelines/verdict/test_gate.py::test_a_rerun_does_not_move_an_alias_that_already_points_at_the_version",
    ],
    "unsigned, forged, stale, replayed or malformed webhook deliveries gate nothing": [
        "pipelines/tracking/test_webhooks.py::test_unsigned_forged_and_stale_deliveries_are_refused",
        "pipelines/tracking/test_webhooks.py::test_a_replayed_delivery_is_refused_while_it_would_still_be_fresh",
        "pipelines/tracking/test_webhooks.py::test_a_signed_but_malformed_body_is_a_bad_request",
        "flows/test_listen.py::test_forged_unsigned_replayed_and_malformed_deliveries_gate_nothing",
    ],
    "a person's description on a gated version is kept": [
        "pipelines/verdict/test_description.py::test_every_verdict_rewrites_the_gate_part_and_keeps_the_person_text_once",
        "pipelines/verdict/test_description.py::test_merging_keeps_exactly_what_stands_below_the_marker",
    ],
    "a gate cut off while writing a first verdict: pending, gated again": [
        "flows/test_faults.py::test_killed_while_writing_a_first_verdict_it_stays_pending_and_is_gated_again",
        "pipelines/verdict/test_gate.py::test_a_verdict_cut_off_while_being_written_leaves_no_verdict",
    ],
    "a gate killed between a new signature and its verdict tag: the old pass does not verify": [
        "flows/test_faults.py::test_killed_before_the_verdict_tag_over_an_old_pass_leaves_a_pass_that_does_not_verify",
    ],
    "two gates at once on one version": [
        "flows/test_faults.py::test_two_cli_gates_at_once_give_one_signed_verdict_and_one_evidence_run",
        "flows/test_xai_gate.py::test_two_gates_at_once_on_one_version_give_one_consistent_verdict",
        "flows/test_sweep.py::test_two_sweeps_racing_give_each_version_exactly_one_verdict",
    ],
    "a killed gate's Prefect slot: held while its lease lasts, then freed by the server": [
        "flows/test_locking.py::test_a_killed_gates_prefect_slot_is_freed_when_its_lease_runs_out",
    ],
    "a crashed flow run (SIGTERM from a worker or docker stop): on_crashed records error": [
        "flows/test_faults.py::test_a_gate_stopped_by_sigterm_crashes_and_its_on_crashed_hook_records_error",
    ],
    "approval asked, no answer within the timeout: blocked": [
        "flows/test_approval.py::test_no_answer_within_the_timeout_is_recorded_as_blocked",
    ],
    "any other failure inside the gate": [
        "flows/test_xai_gate.py::test_an_unexpected_failure_is_recorded_as_error_and_never_promotes",
    ],
    # Policy
    "unknown keys, thresholds out of range": [
        "pipelines/policy/test_gate_policy.py::test_errors_name_the_key_and_its_line",
        "flows/test_cli_policy.py::test_check_names_the_bad_key_and_its_line",
    ],
    "missing secret when signing is on": [
        "flows/test_cli_policy.py::test_a_policy_that_requires_signing_refuses_to_run_without_the_secret",
    ],
    # Security
    "every data string escaped in HTML and markdown": [
        "pipelines/report/test_report.py::test_every_run_string_is_escaped",
        "pipelines/report/test_report.py::test_notes_metric_names_and_quotes_are_escaped",
        "pipelines/report/test_attention_html.py::test_tokens_and_title_appear_only_escaped",
        "flows/test_reporting.py::test_summary_escapes_a_hostile_reason_and_keeps_its_own_links",
    ],
    "weights-only load path never unpickles": [
        "pipelines/verdict/test_gate.py::test_weights_only_models_are_rebuilt_without_unpickling_the_registry_blob",
    ],
    "the signing secret is never logged": [
        "flows/test_xai_gate.py::test_the_signing_secret_appears_nowhere",
    ],
    "guard refuses forged, copied and replayed signatures": [
        "pipelines/verdict/test_signing.py::test_hand_set_copied_forged_or_other_verdicts_are_refused",
        "pipelines/verdict/test_registry_guard.py::test_only_a_signed_pass_gets_the_protected_alias",
        "pipelines/verdict/test_registry_guard.py::test_a_replayed_old_pass_is_refused_after_a_later_block",
        "pipelines/verdict/test_registry_guard.py::test_a_verdict_whose_tags_were_changed_after_it_was_written_is_refused",
        "pipelines/verdict/test_registry_guard.py::test_clients_cannot_write_the_guards_own_tags",
        "pipelines/verdict/test_registry_guard.py::test_a_real_mlflow_server_enforces_the_guard_over_http",
    ],
    "model metadata names code to run (os:system, any dotted callable)": [
        "pipelines/tracking/test_builders.py::test_code_the_operator_did_not_allow_is_refused_before_any_import",
        "pipelines/tracking/test_builders.py::test_os_system_in_metadata_runs_nothing_and_is_a_clear_error",
        "pipelines/tracking/test_builders.py::test_a_gate_of_such_a_model_is_an_error_exit_2_naming_key_and_value",
        "pipelines/tracking/test_builders.py::test_init_kwargs_are_plain_data_and_never_ask_for_downloaded_weights",
    ],
    "pt2 archive with a pickle payload under MLflow 3.18's switch": [
        "pipelines/verdict/test_gate.py::test_a_pt2_archive_with_a_pickle_payload_is_refused_as_mlflow_refuses_it",
    ],
    "weights overwritten after a pass, model deleted and registered again, checks upgraded": [
        "pipelines/verdict/test_gate.py::test_only_a_finished_verdict_under_the_same_policy_and_data_is_reused",
        "pipelines/verdict/test_registry_guard.py::test_a_passed_version_whose_weights_were_overwritten_cannot_take_the_alias",
        "pipelines/verdict/test_registry_guard.py::test_a_model_deleted_and_registered_again_under_the_same_number_is_not_the_pass",
        "pipelines/verdict/test_signing_known_answers.py::test_the_signature_is_the_documented_hmac",
    ],
    "deleting the alias holder, deprecated stage transitions to Production": [
        "pipelines/verdict/test_registry_guard.py::test_the_alias_holder_and_its_model_cannot_be_deleted_until_the_alias_goes",
        "pipelines/verdict/test_registry_guard.py::test_a_deprecated_stage_transition_to_production_needs_what_the_alias_needs",
    ],
    "policy thresholds written as true, 0x1, 017, 1_000 or 1:30": [
        "flows/test_cli_policy.py::test_thresholds_are_decimal_numbers_not_booleans_or_hex",
    ],
    "a policy that can block nothing": [
        "flows/test_cli_policy.py::test_a_policy_that_can_block_nothing_is_said_loudly_and_exits_1",
    ],
    "unsigned or oversized webhook request, a version such as '²'": [
        "flows/test_listen_requests.py::test_an_unsigned_request_is_401_and_an_oversized_one_413_before_the_body_is_read",
        "flows/test_listen_requests.py::test_a_signed_delivery_with_a_version_that_is_no_number_is_400_not_500",
    ],
    "a pass whose alias the guarded registry refuses (CLI without the secret)": [
        "pipelines/verdict/test_registry_guard.py::test_a_pass_the_guard_refuses_the_alias_is_passed_not_promoted_and_tried_again",
    ],
    "a pickled model that pries for the signing key (its environment, its ancestors' /proc)": [
        "flows/test_judging.py::test_pickle_code_runs_in_the_worker_and_finds_no_key_in_its_environment",
        "flows/test_judging.py::test_the_cli_that_holds_the_key_cannot_be_read_by_the_model_it_judges",
        "pipelines/judging/test_sandbox.py::test_the_worker_keeps_what_a_model_needs_and_no_credential",
        "pipelines/judging/test_sandbox.py::test_any_name_that_looks_like_a_credential_is_dropped_whatever_its_prefix",
        "pipelines/judging/test_sandbox.py::test_a_worker_without_capabilities_cannot_read_the_gates_environ_or_memory",
    ],
    "a command that runs a model in its own process (discover, the evaluator) beside the key": [
        "pipelines/judging/test_sandbox.py::test_commands_that_run_a_model_in_process_refuse_beside_the_gates_secrets",
        "pipelines/judging/test_sandbox.py::test_discover_refuses_while_the_signing_secret_is_set",
    ],
    "SIGTERM to the listener while it gates a version": [
        "flows/test_listen.py::test_a_listener_stopped_mid_gate_records_error_and_its_prefect_run_fails",
    ],
    "a passed version the guarded registry refuses the alias to, gated again": [
        "flows/test_xai_gate.py::test_a_pass_the_guarded_registry_refuses_exits_4_and_is_promoted_by_a_signed_rerun",
    ],
    "an audit image over the pixel budget (a 9000 x 9000 PNG of 250 KB)": [
        "pipelines/audit_sets/test_audit_set.py::test_an_image_over_the_pixel_budget_is_refused_from_its_header",
        "pipelines/audit_sets/test_audit_set.py::test_the_pixel_budget_is_the_operators_to_set",
    ],
    "one image listed through a symlink, a hard link and a copy": [
        "pipelines/audit_sets/test_audit_set.py::test_one_image_through_a_symlink_a_hard_link_and_a_copy_is_a_duplicate",
    ],
    "a one-logit binary classifier (sigmoid, BCEWithLogitsLoss)": [
        "xai_checks/test_binary.py::test_the_two_logits_softmax_to_one_minus_p_and_p",
        "xai_checks/test_binary.py::test_each_class_of_a_one_logit_model_has_a_gradient_of_its_own",
        "flows/test_binary_models.py::test_one_logit_models_are_gated_as_two_classes",
    ],
    "a full artifact store, a full tracking database": [
        "flows/test_full_stores.py::test_a_full_artifact_store_is_named_as_such",
        "flows/test_full_stores.py::test_a_full_tracking_database_is_named_as_such",
    ],
    "audit images too small for the model (2 x 2)": [
        "pipelines/stages/test_assembly.py::test_images_too_small_for_the_model_are_one_line_naming_both",
    ],
    "model metadata of the wrong shape (class_names, modality)": [
        "pipelines/tracking/test_builders.py::test_metadata_of_the_wrong_shape_is_one_line_naming_the_key",
    ],
    "a judging worker's answer that is malformed, linked out, for other bytes, or says 'passed'": [
        "pipelines/judging/test_contract.py::test_a_bent_answer_is_refused_naming_what_is_wrong",
        "pipelines/judging/test_contract.py::test_a_linked_file_is_not_read",
        "pipelines/judging/test_contract.py::test_a_missing_or_garbled_judgement_is_an_error_not_a_verdict",
    ],
    # Robustness
    "memory bounded over 1000 GradCAM calls": [
        "xai_checks/test_cam_robustness.py::test_a_thousand_calls_leak_no_memory_hooks_or_graphs",
    ],
    "metric properties (hypothesis)": [
        "xai_checks/test_metrics_properties.py::test_scores_stay_in_the_unit_interval_or_are_nan",
        "xai_checks/test_metrics_properties.py::test_scores_do_not_depend_on_the_heatmap_scale",
        "xai_checks/test_metrics_properties.py::test_a_uniform_heatmap_puts_the_masks_area_inside_it",
    ],
    # Recorded verdicts: never lost, never stale, never fooled
    "an option, policy, secret or version mistake touches no version": [
        "flows/test_verdict_records.py::test_option_and_policy_mistakes_touch_no_version",
        "flows/test_verdict_records.py::test_the_flow_itself_leaves_the_version_alone_on_a_caller_error",
    ],
    "an error during a gate keeps the verdict, records the attempt (last_error, history)": [
        "flows/test_verdict_records.py::test_an_error_during_a_gate_keeps_the_verdict_and_records_the_attempt",
    ],
    "re-gating the alias holder blocked: on_alias_holder_blocked keep | remove": [
        "flows/test_verdict_records.py::test_regating_the_champion_blocked_is_the_policys_decision",
    ],
    "images or masks changed or deleted after a verdict: gated again, never reused": [
        "flows/test_verdict_records.py::test_changed_images_or_masks_are_gated_again_never_reused",
    ],
    "two spellings of one version ('02') or one store: one lock, one verdict": [
        "flows/test_verdict_records.py::test_two_spellings_of_one_version_and_one_store_are_one_gate",
    ],
    "a read-only tracking store: refused before any compute": [
        "flows/test_verdict_records.py::test_a_read_only_store_is_refused_before_any_compute",
    ],
    "a reserved or invalid alias ('latest', 'v3', spaces)": [
        "pipelines/policy/test_gate_policy.py::test_aliases_follow_mlflows_rules",
        "flows/test_verdict_records.py::test_option_and_policy_mistakes_touch_no_version",
    ],
    "Ctrl-C during a gate: exit 130 in seconds, one line, gated again": [
        "flows/test_interrupt.py::test_ctrl_c_during_a_gate_exits_130_at_once_and_the_next_run_gates_again",
    ],
    "UTF-8 BOM, multi-line quoted fields, ./ duplicates, a repeated header, a NUL byte": [
        "pipelines/stages/test_audit_texts.py::test_a_text_csv_with_a_byte_order_mark_is_text_and_loads",
        "pipelines/audit_sets/test_audit_set.py::test_a_byte_order_mark_is_skipped",
        "pipelines/audit_sets/test_audit_set.py::test_a_quoted_field_over_several_lines_keeps_the_line_numbers_of_later_rows",
        "pipelines/audit_sets/test_audit_set.py::test_two_spellings_of_one_image_are_duplicates",
        "pipelines/audit_sets/test_audit_set.py::test_a_header_naming_a_column_twice_is_refused_not_taken_as_the_first",
        "pipelines/audit_sets/test_audit_set.py::test_a_nul_byte_in_a_path_is_an_error_naming_its_line",
    ],
    "a very long text for xai-gate attention; an error after the map was drawn": [
        "flows/test_cli_attention.py::test_a_very_long_text_makes_a_bounded_figure_and_an_error_writes_nothing",
        "flows/test_cli_attention.py::test_write_all_writes_every_file_or_none",
    ],
    "a removal that tips a boundary prediction is not a flip": [
        "xai_checks/test_counterfactual.py::test_a_model_at_its_decision_boundary_tips_over_but_does_not_count_as_flipped",
    ],
    "a Hugging Face model logged with mlflow.transformers (text; image with its processor)": [
        "flows/test_transformers_models.py::test_transformers_text_classifiers_are_gated_shortcut_blocked_clean_promoted",
        "flows/test_transformers_models.py::test_a_transformers_image_classifier_takes_unit_images_through_its_processor",
    ],
    "a device that is not on the machine; cpu and auto agree": [
        "pipelines/test_devices.py::test_cuda_on_a_machine_without_it_is_refused_by_name",
        "pipelines/test_devices.py::test_the_policy_key_takes_only_device_names_and_does_not_change_the_hash",
        "flows/test_devices_gate.py::test_cpu_and_auto_give_the_same_verdict_and_scores",
    ],
    # Discovery written down
    "discover: nothing confirmed, an existing audit set, --strategy alone": [
        "flows/test_discover.py::test_discover_writes_nothing_it_should_not",
    ],
    "a policy naming the replaced max_spurious_score": [
        "pipelines/evidence/test_validation.py::test_the_replaced_spurious_score_option_says_what_replaced_it",
    ],
}


@cache
def _test_functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_every_case_names_tests_that_exist(case: str) -> None:
    assert CATALOGUE[case], f"{case!r} names no test"
    for node_id in CATALOGUE[case]:
        file, _, name = node_id.partition("::")
        path = TESTS / file
        assert path.is_file(), f"{case!r}: {file} does not exist"
        assert name in _test_functions(path), f"{case!r}: {node_id} does not exist"


def _alias_moves(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every call that sets a registry alias in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "set_registered_model_alias"
            ):
                found.append((function.name, node.lineno))
    return found


def test_only_a_passed_verdict_can_move_an_alias():
    """By construction: one call site, after the early return for anything but ``passed``."""
    root = TESTS.parent
    sites = {
        f"{path.relative_to(root)}:{function}"
        for package in ("flows", "pipelines", "xai_checks")
        for path in (root / package).rglob("*.py")
        for function, _ in _alias_moves(path)
    }
    # The guard's override only forwards a checked call to MLflow's store.
    assert sites == {
        "pipelines/verdict/decision.py:promote_alias",
        "pipelines/verdict/guard.py:set_registered_model_alias",
    }
    source = (root / "pipelines" / "verdict" / "decision.py").read_text(encoding="utf-8")
    record = source[source.index("def record_verdict") :]
    guard = record.index("return _keep_or_remove(client, name, version, alias,")
    assert guard < record.index("return promote_alias(name, version, alias)")
