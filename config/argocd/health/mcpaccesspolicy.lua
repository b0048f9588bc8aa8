-- Argo CD health of a palisade.dev McpAccessPolicy (argocd-cm key
-- resource.customizations.health.palisade.dev_McpAccessPolicy), from the status the operator
-- writes:
--   Healthy      Accepted=True (valid, its tests pass, in force on its servers), and the status
--                describes the current spec (observedGeneration)
--   Progressing  no status yet, a status of an older generation, no Accepted condition yet, or
--                Accepted=Unknown
--   Degraded     Accepted=False, whatever the reason: the operator computes it from the spec and
--                the McpServers it targets, nothing changes it but an edit (PolicyInvalid,
--                PolicyTestFailed, CrossNamespaceRef, NoTargets); until then the last valid
--                policy stays in force
-- The message is the Accepted condition's. Reasons: crds/src/conditions.rs. Embedded verbatim
-- in config/argocd/argocd-cm-patch.yaml; operator/tests/argocd_health.rs checks both.
local hs = {}
local generation = obj.metadata.generation
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to check the McpAccessPolicy"
  return hs
end
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to check generation " .. tostring(generation)
  return hs
end
local accepted = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Accepted" then
      accepted = condition
    end
  end
end
if accepted == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to report the Accepted condition"
  return hs
end
if generation ~= nil and accepted.observedGeneration ~= nil and accepted.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Palisade operator to check generation " .. tostring(generation)
  return hs
end
hs.message = accepted.message
if hs.message == nil or hs.message == "" then
  hs.message = "Accepted is " .. tostring(accepted.status) .. " (" .. tostring(accepted.reason) .. ")"
end
if accepted.status == "True" then
  hs.status = "Healthy"
elseif accepted.status == "False" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs
