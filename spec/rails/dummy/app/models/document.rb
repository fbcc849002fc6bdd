# frozen_string_literal: true

# A custom table name: its polymorphic type "Document" only maps to
# project_documents through the model (tenant_kit's polymorphic map).
class Document < ApplicationRecord
  self.table_name = "project_documents"
  belongs_to :tenant
  belongs_to :project
  has_one_attached :file
  has_many :comments, as: :commentable, dependent: :destroy
end
