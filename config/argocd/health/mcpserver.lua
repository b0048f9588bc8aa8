-- Argo CD health of a palisade.dev McpServer (argocd-cm key
-- resource.customizations.health.palisade.dev_McpServer), from the status the operator writes:
--   Healthy      Ready=True, the status describes the current spec (observedGeneration), and
--                the ready pods serve the current policy (PolicyRolledOut is not RollingOut)
--   Progressing  no status yet, a status of an older generation, no Ready condition yet,
--                Ready=Unknown, or Ready=False while something is still on its way by itself:
--                pods rolling out (PodsNotReady), External Secrets Operator not done yet
--                (ExternalSecretNotReady); or Ready=True while ready pods still serve an older
--                policy (PolicyRolledOut=False, RollingOut: kubelet has not projected the
--                changed ConfigMap yet, which it does by itself within about a minute)
--   Degraded     Ready=False for any other reason: someone has to act (a policy that does not
--                compile or fails its tests, a missing ConfigMap or Secret, no External Secrets
--                Operator); also a reason this check does not know, so that nothing new is
--                mistaken for "wait"; or, for a server in front of an upstream, a tool whose
--                definition differs from its pin (ToolsPinned=False, ToolsChanged: a possible
--                rug pull, reviewed by a person). ToolsUnpinned and NoInventory are not.
-- The message is the Ready condition's. Reasons: crds/src/conditions.rs. Embedded verbatim in
-- config/argocd/argocd-cm-patch.yaml; operator/tests/argocd_health.rs checks both.
local waiting = { PodsNotReady = true, ExternalSecretNotReady = true }

local hs = {}
local generation = obj.metadata.generation
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to reconcile the McpServer"
  return hs
end
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to reconcile generation " .. tostring(generation)
  return hs
end
local ready = nil
local rolled_out = nil
local pinned = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "PolicyRolledOut" then
      rolled_out = condition
    elseif condition.type == "ToolsPinned" then
      pinned = condition
    end
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to report the Ready condition"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to reconcile generation " .. tostring(generation)
  return hs
end
hs.message = ready.message
if hs.message == nil or hs.message == "" then
  hs.message = "Ready is " .. tostring(ready.status) .. " (" .. tostring(ready.reason) .. ")"
end
if ready.status == "True" and pinned ~= nil and pinned.status == "False" and pinned.reason == "ToolsChanged" then
  hs.status = "Degraded"
  hs.message = pinned.message
elseif ready.status == "True" and rolled_out ~= nil and rolled_out.status == "False" and rolled_out.reason == "RollingOut" then
  hs.status = "Progressing"
  if rolled_out.message ~= nil and rolled_out.message ~= "" then
    hs.message = rolled_out.message
  else
    hs.message = "The ready pods do not all serve the current policy yet (RollingOut)"
  end
elseif ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and not waiting[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs
